"""Domain entities the store exchanges with the rest of workbench (never raw rows).

All timestamps are timezone-aware UTC ``datetime`` objects (the database keeps naive UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# paused: stopped at a checkpoint, resumable (workbench.train.checkpoint); not terminal
RUN_STATES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    name: str
    architecture: dict[str, Any]
    hyperparams: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    model_id: str
    state: str
    error: str | None
    epoch: int
    epochs_total: int
    hyperparams: dict[str, Any]
    dataset: str
    target: str
    device: str | None
    param_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    # The latest epoch's metrics {name: value} (step-level "step_loss" excluded).
    metrics: dict[str, float] = field(default_factory=dict)
    # Organisation: a readable name (a default one if none was given), the experiment the
    # run belongs to, its tags and free-text notes.
    name: str = ""
    experiment: str = "default"
    tags: tuple[str, ...] = ()
    notes: str = ""

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class ParamRecord:
    param_id: str
    model_id: str
    run_id: str | None
    safetensors: bytes = field(repr=False)
    size_bytes: int
    created_at: datetime


@dataclass(frozen=True)
class MetricRecord:
    run_id: str
    epoch: int
    step: int | None
    name: str
    value: float
    time: datetime
