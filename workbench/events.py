"""Training events: the one vocabulary spoken by the engine, executors, store, API and UI.

The engine emits plain dicts (JSON-safe, so they cross process and kernel boundaries
unchanged) to a *sink*: any callable taking one event. Shape of every event:

    {"type": "epoch", "run_id": "r_...", "time": 1700000000.0, "data": {...}}

Types and their ``data``:
- ``run.started``   {"device": "cpu", "epochs_total": 5, "n_train": 54000, "n_val": 6000,
                     "flops_per_sample": {"forward": int, "backward": int}}
- ``step``          {"epoch": 1, "step": 120, "loss": 0.31}   (sampled, not every step)
- ``epoch``         {"epoch": 1, "step": 844, "train_loss", "train_accuracy", "val_loss",
                     "val_accuracy", "epoch_time_s", "samples_per_s", "forward_tflops",
                     "backward_tflops", "total_tflops", "peak_memory_bytes"}
- ``evaluation``    {"epoch": 5, "split": "test", "test_loss", "test_accuracy", "n_test"}
                    (the trained model on the held-out test split, just before completion)
- ``run.completed`` {"epochs_run": 5, "stopped_early": bool, "metrics": {...last epoch...},
                     "parameters_safetensors_b64": str}   (trained weights, see workbench.model)
- ``run.failed``    {"error": "message"}
- ``run.cancelled`` {"epoch": 2}
- ``checkpoint``    {"epoch": 2, "state": {...JSON...}, "tensors_safetensors_b64": str}
                    (every ``checkpoint_every`` epochs and on pause; stored as a file beside
                    the store, the logged event keeps ``checkpoint_id`` instead)
- ``run.paused``    {"epoch": 2}  (after the checkpoint of that epoch; the run is ``paused``)
- ``run.resumed``   {"target": "local", "from_epoch": 2}  (the owner queued it again)
- ``metrics``       {"batch_id": "b_...", "count": n, "key": [...], "value": [...],
                     "step": [...], "epoch": [...], "time": [...]}   (n points of a tracked
                     run, ``workbench.track`` / ``POST /api/runs/{id}/log-batch``, as equal-length
                     columns; ``time`` in epoch seconds. Stored as ``metrics`` rows in one
                     INSERT; a ``batch_id`` is applied once, a repeated one is refused)

Runs trained outside workbench (``workbench.track``) have target ``EXTERNAL_TARGET``: they start
``running`` (a ``run.started`` event with their name, experiment and tags), get ``metrics``
batches, and end with ``run.completed`` / ``run.failed`` / ``run.cancelled`` sent by the client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Sink = Callable[[Event], None]

RUN_STARTED = "run.started"
STEP = "step"
EPOCH = "epoch"
EVALUATION = "evaluation"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"
METRICS = "metrics"
TERMINAL = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})
# Checkpoints and pause (workbench.train.checkpoint): a ``checkpoint`` event carries the
# training state at the end of an epoch; ``run.paused`` ends an execution without ending the
# run (it is resumed from its last checkpoint later, on any target).
CHECKPOINT = "checkpoint"
RUN_PAUSED = "run.paused"
RUN_RESUMED = "run.resumed"  # logged by the owner: the run is queued again on ``target``
# Events after which an executor's process is done with the run.
ENDS_EXECUTION = TERMINAL | {RUN_PAUSED}

# The target (and model id) of runs trained outside workbench and tracked with workbench.track.
EXTERNAL_TARGET = "external"

# Per-epoch metric names that the store keeps in long form.
EPOCH_METRICS = (
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "epoch_time_s",
    "samples_per_s",
    "forward_tflops",
    "backward_tflops",
    "total_tflops",
    "peak_memory_bytes",
)
# Metrics of an ``evaluation`` event (stored like epoch metrics, at the final epoch).
EVALUATION_METRICS = ("test_loss", "test_accuracy")


def make_event(type_: str, run_id: str, **data: Any) -> Event:
    """Build an event with a wall-clock timestamp."""
    return {"type": type_, "run_id": run_id, "time": time.time(), "data": data}


def null_sink(event: Event) -> None:
    """A sink that drops everything (for callers that only want the return value)."""


def fan_out(*sinks: Sink | None) -> Sink:
    """One sink that forwards each event to several (None entries are skipped)."""
    live = [s for s in sinks if s is not None]

    def sink(event: Event) -> None:
        for s in live:
            s(event)

    return sink


def metric_points(data: Any) -> list[tuple[str, float, int | None]]:
    """The ``(key, value, step)`` points of a ``metrics`` event's data (its equal-length
    ``key``/``value``/``step`` columns), skipping non-finite or non-numeric values: what a
    live chart of a tracked run draws."""
    keys, values = data.get("key") or [], data.get("value") or []
    steps = data.get("step") or [None] * len(values)
    out: list[tuple[str, float, int | None]] = []
    for key, value, step in zip(keys, values, steps):
        if (isinstance(key, str) and isinstance(value, (int, float))
                and not isinstance(value, bool) and math.isfinite(value)):
            out.append((key, float(value), int(step) if isinstance(step, (int, float))
                        and not isinstance(step, bool) else None))
    return out
