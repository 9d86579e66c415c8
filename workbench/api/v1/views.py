"""Runs as the native API shows them: Cortex jobs and neurogrid tasks, and their ids.

Every run is a task (id = the run id, ``r_<hex>``) and a Cortex job (``job_<hex>``, the same
hex), so no mapping table is needed: ``job_id(run_id)`` and ``run_id_of(job_id)`` are inverses.
Who started a run is logged as a ``run.owner`` event on it (``{"key_id": ...}``): the runs table
stays as it is and analytics read it back from the event log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request

from ...config import get_settings
from ...service import Workbench
from ...store import RunRecord
from ..policy import run_id_of
from .conventions import not_found

RUN_OWNER = "run.owner"  # event type: data {"key_id": ..., "via": "jobs.submit" | ...}

# run state -> Cortex job status / neurogrid task status
JOB_STATUS = {"queued": "submitted", "running": "training", "paused": "paused",
              "succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}
TASK_STATUS = {"queued": "pending", "running": "running", "paused": "paused",
               "succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}
# filter values (task or run vocabulary) -> run states
STATUS_ALIASES: dict[str, tuple[str, ...]] = {
    **{task: (state,) for state, task in TASK_STATUS.items()},
    **{state: (state,) for state in TASK_STATUS},
}


def job_id(run_id: str) -> str:
    return "job_" + run_id.removeprefix("r_")


def finetune_id(run_id: str) -> str:
    """The Cortex fine-tune id of a run (``finetune_<hex>``); it names the same run as
    ``job_<hex>`` and ``r_<hex>``."""
    return "finetune_" + run_id.removeprefix("r_")




def get_run(service: Workbench, any_id: str, *, field: str = "job_id") -> RunRecord:
    from ...service import NotFound

    run_id = run_id_of(any_id)
    if not run_id.startswith("r_"):
        raise not_found("job", any_id, field)
    try:
        return service.get_run(run_id)
    except NotFound:
        raise not_found("job" if field == "job_id" else "task", any_id, field) from None


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def duration_s(run: RunRecord) -> float | None:
    if run.started_at is None:
        return None
    end = run.finished_at or run.updated_at
    return max(0.0, (end - run.started_at).total_seconds())


def compute_hours(run: RunRecord) -> float:
    """The compute a run used: its wall-clock duration (start to end, or to now while it
    runs) in hours. Queued time is not compute."""
    return (duration_s(run) or 0.0) / 3600.0


def task_cost(run: RunRecord) -> float:
    """What a task cost: ``compute_hours(run) x WORKBENCH_COMPUTE_PRICE_PER_HOUR`` (USD;
    default 0: a self-hosted workbench charges nothing until a price is set)."""
    return round(compute_hours(run) * get_settings().compute_price_per_hour, 6)


def earnings(runs: Any, target: str, *, now: datetime | None = None) -> dict[str, Any]:
    """What a compute target (a node) earned: the ``task_cost`` of the succeeded runs it
    trained, in total and for runs finished in the last 30 days (USD strings, as the neurogrid
    document shows them)."""
    from datetime import timedelta, timezone

    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=30)
    done = [r for r in runs if r.target == target and r.state == "succeeded"]
    recent = [r for r in done if r.finished_at is not None and r.finished_at >= cutoff]
    return {"total": f"{sum(task_cost(r) for r in done):.2f}", "currency": "USD",
            "last_30_days": f"{sum(task_cost(r) for r in recent):.2f}",
            "compute_hours": round(sum(compute_hours(r) for r in done), 6)}


def task_view(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.run_id,
        "job_id": job_id(run.run_id),
        "type": "training",
        "status": TASK_STATUS.get(run.state, run.state),
        "state": run.state,
        "model": run.model_id,
        "dataset": run.dataset,
        "node_id": run.target,
        "device": run.device,
        "epoch": run.epoch,
        "epochs_total": run.epochs_total,
        "metrics": run.metrics,
        "param_id": run.param_id if run.state == "succeeded" else None,
        "error": run.error,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "completed_at": iso(run.finished_at),
        "duration_s": duration_s(run),
        "cost": task_cost(run),
    }


TASK_FIELDS = (
    "id", "job_id", "type", "status", "state", "model", "dataset", "node_id", "device", "epoch",
    "epochs_total", "metrics", "param_id", "error", "created_at", "started_at", "completed_at",
    "duration_s", "cost",
)


def base_url(request: Request) -> str:
    """This server's URL as the client reached it, without a trailing slash."""
    return str(request.base_url).rstrip("/")


def record_owner(service: Workbench, run_id: str, key_id: str, via: str) -> None:
    from ... import events as ev

    service.record_event(ev.make_event(RUN_OWNER, run_id, key_id=key_id, via=via))
