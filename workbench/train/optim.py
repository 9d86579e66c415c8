"""Optimizer construction from the ``Optimizer`` spec, on the fastest implementation torch has.

torch ships three implementations of SGD, Adam and AdamW: ``fused`` (one kernel per device and
dtype for the whole update), ``foreach`` (multi-tensor ops, a few launches per step) and the
per-parameter ``single_tensor`` loop, which is torch's default on CPU and showed up as ~30% of
a CPU step in profiles. ``impl="auto"`` picks fused where a probe step on the parameters'
device and dtype works, else foreach where torch has real multi-tensor kernels for the device
(CUDA, not CPU: there foreach is the same loop), else single_tensor. ``optimizer_impl`` reads
back which one an optimizer uses, for the run's events.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any, Literal

import torch

from ..spec import Optimizer

Impl = Literal["auto", "fused", "foreach", "single_tensor"]
IMPLS: tuple[str, ...] = ("auto", "fused", "foreach", "single_tensor")
_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    spec: Optimizer,
    *,
    capturable: bool = False,
    impl: Impl | str = "auto",
) -> torch.optim.Optimizer:
    """``capturable`` keeps Adam's step counter on the device so the update can live inside a
    CUDA graph. ``impl`` is ``auto`` or forces one implementation (a forced ``fused`` that the
    device or dtype lacks raises ``ValueError``)."""
    params = list(params)
    chosen = resolve_impl(spec.type, params, impl)
    kwargs: dict[str, Any] = {
        "fused": chosen == "fused",
        "foreach": chosen == "foreach",
        "lr": spec.lr,
        "weight_decay": spec.weight_decay,
    }
    if spec.type == "sgd":
        kwargs["momentum"] = spec.momentum
    else:
        kwargs.update(betas=spec.betas, capturable=capturable)
    return _CLASSES[spec.type](params, **kwargs)


def optimizer_impl(optimizer: torch.optim.Optimizer) -> str:
    """``fused``, ``foreach`` or ``single_tensor``: what ``optimizer.step()`` runs (as set
    explicitly by ``make_optimizer``; torch's own ``None`` default resolves at step time)."""
    group = optimizer.param_groups[0] if optimizer.param_groups else {}
    if group.get("fused"):
        return "fused"
    if group.get("foreach"):
        return "foreach"
    return "single_tensor"


def resolve_impl(kind: str, params: list[torch.Tensor], impl: str = "auto") -> str:
    """The implementation ``make_optimizer`` would use for these parameters."""
    if kind not in _CLASSES:
        raise ValueError(f"unknown optimizer type {kind!r}")
    if impl not in IMPLS:
        raise ValueError(f"optimizer impl must be one of {list(IMPLS)}, got {impl!r}")
    if impl in ("foreach", "single_tensor"):
        return impl
    placements = {(p.device, p.dtype) for p in params}
    fused_ok = bool(placements) and all(
        fused_supported(kind, device, dtype) for device, dtype in placements
    )
    if impl == "fused":
        if not fused_ok:
            raise ValueError(
                f"fused {kind} is not available for parameters on "
                f"{sorted(f'{d}/{t}' for d, t in placements)} in torch {torch.__version__}"
            )
        return "fused"
    if fused_ok:
        return "fused"
    if placements and all(_has_foreach_kernels(device) for device, _ in placements):
        return "foreach"
    return "single_tensor"


@cache
def fused_supported(kind: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a fused ``kind`` step runs for a parameter of this device and dtype: torch
    checks at construction and at the first step, so try one on a one-element tensor."""
    if not dtype.is_floating_point:
        return False
    try:
        probe = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
        probe.grad = torch.ones_like(probe)
        opt = _CLASSES[kind]([probe], lr=0.1, fused=True)
        opt.step()
        return bool(torch.isfinite(probe.detach()).all())
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False


def _has_foreach_kernels(device: torch.device) -> bool:
    """torch's own test for real multi-tensor kernels (the default it picks for ``None``)."""
    try:
        from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

        return device.type in _get_foreach_kernels_supported_devices()
    except ImportError:  # private helper: if it moves, trust CUDA only
        return device.type == "cuda"
