"""The run records of active runs, projected from their events instead of re-read from DuckDB.

A training run emits about 20 ``step`` events and one ``epoch`` event per epoch, and clients
poll its status hard (``GET /api/runs/{id}``). Re-reading the run (a row and an aggregate over
its metrics) after every event made each status request after an event a DuckDB query, and the
status rate collapsed while a run trained. The one writer (``Workbench.record_event``) applies
each event to the cached record here instead:

- a ``step`` event changes nothing a run record shows (step losses are not in its metrics);
- an ``epoch`` event sets the epoch and the latest metrics, as the store does with it;
- anything else (start, evaluation, the end, a failed write) drops the cached record, and the
  next read takes it from the store once.
"""

from __future__ import annotations

import dataclasses
import numbers
from datetime import datetime, timezone
from typing import Any

from .. import events as ev
from ..store import RunRecord

UNCHANGED = "unchanged"
DROP = "drop"


def _number(value: Any) -> bool:  # what the store keeps as a metric (store.events._is_number)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def project(run: RunRecord, event: dict[str, Any]) -> RunRecord | str:
    """``run`` after ``event`` (stored by the store already): a new record, ``UNCHANGED`` or
    ``DROP`` (this event is not projected: read the run from the store again)."""
    kind, data = event.get("type"), event.get("data") or {}
    if run.is_terminal:  # the store ignores events after the end; so do we
        return UNCHANGED if kind in (ev.STEP, ev.EPOCH) else DROP
    if kind == ev.STEP:
        return UNCHANGED
    if kind != ev.EPOCH or not _number(data.get("epoch")):
        return DROP
    epoch = int(data["epoch"])
    latest = {str(k): float(v) for k, v in data.items()
              if k not in ("epoch", "step") and _number(v)}
    if epoch < run.epoch or not latest:
        return DROP  # an out-of-order epoch: the store's aggregate decides
    metrics = {**run.metrics, **latest} if epoch == run.epoch else latest
    return dataclasses.replace(run, epoch=epoch, metrics=metrics,
                               updated_at=datetime.now(timezone.utc))
