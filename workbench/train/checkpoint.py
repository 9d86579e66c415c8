"""Training checkpoints: everything the engine needs to continue a run exactly where it was.

A checkpoint is two parts, both plain enough to cross process and kernel boundaries inside an
event (``checkpoint``) and to live as files beside the store:

- tensors (safetensors): the model's state (``model.<name>``), the optimizer's per-parameter
  state (``optim.<index>.<key>``), and the RNG states (``rng.torch_cpu``, ``rng.cuda``,
  ``rng.permutation``: the generator that shuffles each epoch's batches);
- JSON state: the epoch and global step reached, early stopping's best/stale counters, the
  optimizer's non-tensor per-parameter values, and a format version.

The engine uses no numpy or Python ``random`` state (data splits are seeded from the run's
seed and rebuilt identically), so those are not captured. The optimizer's ``param_groups``
are not stored either: they follow from the run's hyperparameters, which a resume reuses.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import torch

FORMAT = 1
_MODEL, _OPTIM, _RNG_CPU, _RNG_CUDA, _RNG_PERM = "model.", "optim.", "rng.torch_cpu", \
    "rng.cuda", "rng.permutation"


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    def to_b64(self) -> str:
        from safetensors.torch import save

        return base64.b64encode(save(self.tensors)).decode("ascii")

    @classmethod
    def from_blob(cls, blob: bytes, state: dict[str, Any]) -> Checkpoint:
        from safetensors.torch import load

        if int(state.get("format", 0)) != FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {FORMAT}")
        return cls(tensors=load(blob), state=dict(state))


def capture(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            generator: torch.Generator, device: torch.device, epoch: int, global_step: int,
            stopper: Any) -> Checkpoint:
    """The training state at the end of ``epoch`` (tensors copied to CPU)."""
    tensors: dict[str, torch.Tensor] = {
        _MODEL + name: t.detach().to("cpu", copy=True).contiguous()
        for name, t in model.state_dict().items()
    }
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors[_RNG_CPU] = torch.get_rng_state()
    tensors[_RNG_PERM] = generator.get_state()
    if device.type == "cuda":
        tensors[_RNG_CUDA] = torch.cuda.get_rng_state(device)
    best = stopper.best
    state = {
        "format": FORMAT, "epoch": epoch, "global_step": global_step,
        "early_stopping": {"best": best if math.isfinite(best) else None,
                           "stale": stopper.stale},
        "optimizer_scalars": scalars,
    }
    return Checkpoint(tensors=tensors, state=state)


def restore(checkpoint: Checkpoint, *, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, generator: torch.Generator,
            device: torch.device, stopper: Any) -> tuple[int, int]:
    """Put the state back; returns (epoch done, global step). ValueError if it does not fit
    the model (another architecture)."""
    tensors, state = checkpoint.tensors, checkpoint.state
    weights = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the checkpoint does not fit this model: {exc}") from None
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM):
            index, _, name = key[len(_OPTIM):].partition(".")
            per_param.setdefault(int(index), {})[name] = value
    for index, values in (state.get("optimizer_scalars") or {}).items():
        per_param.setdefault(int(index), {}).update(values)
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": per_param, "param_groups": current["param_groups"]})
    torch.set_rng_state(tensors[_RNG_CPU])
    generator.set_state(tensors[_RNG_PERM])
    if device.type == "cuda" and _RNG_CUDA in tensors:
        torch.cuda.set_rng_state(tensors[_RNG_CUDA], device)
    stopping = state.get("early_stopping") or {}
    best = stopping.get("best")
    stopper.best = math.inf if best is None else float(best)
    stopper.stale = int(stopping.get("stale") or 0)
    return int(state["epoch"]), int(state["global_step"])
