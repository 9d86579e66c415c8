"""Layer allocation: consecutive linear layers -> pipeline stages on devices.

A stage is a run of consecutive spec layers: each linear layer together with the activations
that follow it, so a stage boundary always carries a linear layer's (activated) output. The
split minimises the slowest stage's expected time, ``stage FLOPs / device score``, by trying
every contiguous split (an MLP has at most five linear layers, so this is a handful of cases).

The costs come from :func:`workbench.model.layer_costs` (forward + backward FLOPs per sample);
a device's score is its measured throughput (any unit, only ratios matter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

from ..model import layer_costs
from ..spec import Architecture


@dataclass(frozen=True)
class StagePlan:
    """One pipeline stage: spec layers ``[start, end)`` on device number ``device`` (0-based
    position in the score list)."""

    stage: int
    device: int
    start: int
    end: int
    linear_layers: tuple[int, ...]  # spec indices of the linear layers in this stage
    forward_flops: int  # per sample
    backward_flops: int  # per sample

    @property
    def train_flops(self) -> int:
        return self.forward_flops + self.backward_flops

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["linear_layers"] = list(self.linear_layers)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StagePlan:
        return cls(**{**data, "linear_layers": tuple(data["linear_layers"])})


def _blocks(architecture: Architecture) -> list[tuple[int, int, int]]:
    """``(start, end, linear index)`` per linear layer: the spec range ``[start, end)`` holds
    the linear layer and the activations after it (anything before the first linear layer
    joins the first block)."""
    linear = [i for i, layer in enumerate(architecture.layers) if layer.type == "linear"]
    starts = [0, *linear[1:]]
    ends = [*linear[1:], len(architecture.layers)]
    return list(zip(starts, ends, linear))


def allocate(architecture: Architecture, scores: Sequence[float]) -> list[StagePlan]:
    """Split ``architecture`` over devices with these ``scores`` (higher = faster).

    Uses ``min(len(scores), linear layers)`` stages; devices keep their order (stage ``k`` runs
    on device ``k``), and when there are more devices than linear layers the fastest ones are
    used. Raises ``ValueError`` for no devices or a non-positive score.
    """
    if not scores:
        raise ValueError("no devices to allocate layers to")
    for i, score in enumerate(scores):
        if not score > 0:
            raise ValueError(f"device {i + 1} has a non-positive score {score!r}")
    blocks = _blocks(architecture)
    costs = layer_costs(architecture)
    block_flops = [
        (sum(c.forward_flops for c in costs[a:b]), sum(c.backward_flops for c in costs[a:b]))
        for a, b, _ in blocks
    ]
    n_stages = min(len(scores), len(blocks))
    # The fastest devices, kept in their registration order.
    used = sorted(sorted(range(len(scores)), key=lambda i: -scores[i])[:n_stages])

    best: tuple[float, tuple[int, ...]] | None = None
    for cuts in combinations(range(1, len(blocks)), n_stages - 1):
        bounds = (0, *cuts, len(blocks))
        slowest = max(
            sum(f + b for f, b in block_flops[bounds[k] : bounds[k + 1]]) / scores[used[k]]
            for k in range(n_stages)
        )
        if best is None or slowest < best[0]:
            best = (slowest, bounds)
    assert best is not None
    bounds = best[1]
    plans = []
    for k in range(n_stages):
        first, last = bounds[k], bounds[k + 1]
        plans.append(
            StagePlan(
                stage=k,
                device=used[k],
                start=blocks[first][0],
                end=blocks[last - 1][1],
                linear_layers=tuple(blocks[j][2] for j in range(first, last)),
                forward_flops=sum(f for f, _ in block_flops[first:last]),
                backward_flops=sum(b for _, b in block_flops[first:last]),
            )
        )
    return plans

