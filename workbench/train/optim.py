"""Optimizer construction from the ``Optimizer`` spec."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..spec import Optimizer


def make_optimizer(
    params: Iterable[torch.nn.Parameter], spec: Optimizer, *, capturable: bool = False
) -> torch.optim.Optimizer:
    """``capturable`` keeps Adam's step counter on the device so the update can live inside a
    CUDA graph."""
    params = list(params)
    if spec.type == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    cls = torch.optim.Adam if spec.type == "adam" else torch.optim.AdamW
    return cls(
        params,
        lr=spec.lr,
        betas=spec.betas,
        weight_decay=spec.weight_decay,
        capturable=capturable,
    )
