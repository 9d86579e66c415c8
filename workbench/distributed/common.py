"""What pipeline and DDP training share: the batch order, a compute timer, and the epoch report
that rank 0 assembles from every rank's figures.

The batch order is the engine's (``workbench.train.engine``): a ``torch.Generator`` seeded with
``hp.seed`` draws one ``randperm`` per epoch and batches are consecutive slices of it, so a
distributed run sees exactly the batches a single-process run sees.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from .. import events as ev
from ..spec import Hyperparams
from ..train.engine import _sampled_steps  # the engine's choice of which step losses to report


class BatchOrder:
    """Per-epoch permutations and batch slices, identical to the single-process engine's."""

    def __init__(self, n: int, hp: Hyperparams):
        if n == 0:
            raise ValueError("the training split is empty")
        self.n, self.shuffle = n, hp.shuffle
        self.batch_size = min(hp.batch_size, n)
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.generator = torch.Generator().manual_seed(hp.seed)

    def size(self, step: int) -> int:
        """Samples in batch ``step`` (only the last one can be short)."""
        return min(self.batch_size, self.n - step * self.batch_size)

    def epoch(self) -> list[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return [perm[s * self.batch_size : (s + 1) * self.batch_size]
                for s in range(self.steps_per_epoch)]


def sampled_steps(steps: int, wanted: int) -> list[int]:
    return _sampled_steps(steps, wanted)


class ComputeTimer:
    """Seconds spent in forward and backward compute on one rank (communication excluded).
    On CUDA it synchronizes around each timed call: accurate figures, at some overlap cost."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.forward_s = self.backward_s = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def timed(self, phase: str, fn, *args, **kwargs):
        t0 = self._now()
        try:
            return fn(*args, **kwargs)
        finally:
            setattr(self, f"{phase}_s", getattr(self, f"{phase}_s") + self._now() - t0)

    def collect(self) -> tuple[float, float]:
        out = (self.forward_s, self.backward_s)
        self.forward_s = self.backward_s = 0.0
        return out


def tflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e12 if seconds > 0 else 0.0


def device_report(flops_fwd: float, flops_bwd: float, fwd_s: float, bwd_s: float) -> dict[str, float]:
    """One device's entry in an epoch's ``devices`` map (the trainer API's teraflops shape)."""
    return {
        "forward_tflops": tflops(flops_fwd, fwd_s),
        "backward_tflops": tflops(flops_bwd, bwd_s),
        "total_tflops": tflops(flops_fwd + flops_bwd, fwd_s + bwd_s),
        "forward_time_s": fwd_s,
        "backward_time_s": bwd_s,
    }


JOB_TFLOPS = ("forward_tflops", "backward_tflops", "total_tflops")


def job_tflops(devices: dict[str, dict[str, float]]) -> dict[str, float]:
    """A job's TFLOPS from its devices': the sum per figure (devices compute side by side, so
    their rates add up). The one place a job figure is derived from device figures."""
    return {k: sum(float(d[k]) for d in devices.values()) for k in JOB_TFLOPS}


def epoch_metrics(
    *,
    epoch: int,
    step: int,
    samples: int,
    loss_sum: float,
    correct: float,
    val: tuple[float, float, int],
    train_s: float,
    t0: float,
    devices: dict[str, dict[str, float]],
    model_flops: tuple[int, int],
    strategy: str,
    world_size: int,
) -> dict[str, Any]:
    """The ``epoch`` event's data: the engine's metric names plus ``devices`` (per-device
    forward/backward/total TFLOPS), ``strategy`` and ``world_size``.

    One source of truth: the job's ``forward_tflops``, ``backward_tflops`` and ``total_tflops``
    are the **sums** of its devices' figures (:func:`job_tflops`; each device's is its FLOPs
    over its own compute time), so the job total and the per-device figures always agree.
    ``wall_tflops`` is the end-to-end rate: the job's FLOPs over the epoch's wall time."""
    val_loss_sum, val_correct, n_val = val
    fwd_s = sum(d["forward_time_s"] for d in devices.values())
    bwd_s = sum(d["backward_time_s"] for d in devices.values())
    fwd, bwd = model_flops
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": loss_sum / samples,
        "train_accuracy": correct / samples,
        "val_loss": val_loss_sum / n_val if n_val else None,
        "val_accuracy": val_correct / n_val if n_val else None,
        "epoch_time_s": time.perf_counter() - t0,
        "samples_per_s": samples / train_s if train_s > 0 else 0.0,
        **job_tflops(devices),
        "wall_tflops": tflops((fwd + bwd) * samples, train_s),
        "forward_time_s": fwd_s,
        "backward_time_s": bwd_s,
        "peak_memory_bytes": 0,
        "devices": devices,
        "strategy": strategy,
        "world_size": world_size,
    }


def emit_steps(sink: ev.Sink, run_id: str, epoch: int, first_step: int, slots: list[int],
               losses: list[float]) -> None:
    for slot, loss in zip(slots, losses):
        sink(ev.make_event(ev.STEP, run_id, epoch=epoch, step=first_step + slot + 1, loss=loss))
