"""Analytics and system routes (neurogrid): ``/analytics/stats``, ``/analytics/performance``,
``/analytics/usage``, ``/system/health`` (no auth), ``/system/version`` (no auth).

Usage is per API key: a non-admin key sees only its own row, an admin key every key's.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ... import __version__
from ... import events as ev
from ...store.usage import metric_points, run_counts, usage_by_key
from ..deps import ServiceDep
from .conventions import API_VERSION, READ_ERRORS, ok
from .security import ReadKey, granted

router = APIRouter(tags=["analytics"])

TIMEFRAMES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
              "30d": timedelta(days=30)}
Timeframe = Literal["1h", "24h", "7d", "30d"]
METRICS = tuple(ev.EPOCH_METRICS)
# Built from the event vocabulary so the two cannot drift (mypy wants literal values here).
Metric = Literal[METRICS]  # type: ignore[valid-type]
_STARTED = time.time()


def _since(timeframe: str) -> datetime:
    return datetime.now(timezone.utc) - TIMEFRAMES[timeframe]


def _summary(values: list[float | None]) -> dict[str, Any]:
    finite: list[float] = [v for v in values if v is not None]
    if not finite:
        return {"count": 0, "mean": None, "min": None, "max": None, "last": None}
    return {"count": len(finite), "mean": sum(finite) / len(finite), "min": min(finite),
            "max": max(finite), "last": finite[-1]}


@router.get("/analytics/stats", responses=READ_ERRORS)
def stats(request: Request, service: ServiceDep, _: ReadKey) -> Response:
    """Tasks by status, tasks today, compute hours, nodes (compute targets), deployments."""
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = run_counts(service.store, since=midnight)
    running_targets = {r.target for r in service.list_runs(state="running", limit=500)[0]}
    deployments = list(getattr(request.app.state, "v1_deployments", {}).values())
    latencies = [lat for d in deployments for lat in d.batcher.stats.latencies_ms]
    return ok({
        "total_nodes": len(service.targets),
        "active_nodes": len(running_targets),
        "total_tasks": counts["total"],
        "total_tasks_today": counts["created_since"],
        "tasks_by_status": counts["by_state"],
        "average_task_duration_s": counts["mean_duration_s"],
        "total_compute_hours": counts["compute_seconds"] / 3600.0,
        "deployments": len(deployments),
        "average_response_time_ms": sum(latencies) / len(latencies) if latencies else None,
    })


@router.get("/analytics/performance", responses=READ_ERRORS)
def performance(
    service: ServiceDep, _: ReadKey,
    timeframe: Annotated[Timeframe, Query(description="1h, 24h, 7d or 30d")] = "24h",
    metric: Annotated[Metric | None, Query(
        description=f"one of {', '.join(METRICS)}; all of them summarised if omitted")] = None,
) -> Response:
    """Per-epoch training metrics over a time frame: the series of one metric, or a summary
    of each."""
    since = _since(timeframe)
    if metric is not None:
        points = metric_points(service.store, name=metric, since=since)
        return ok({"timeframe": timeframe, "metric": metric,
                   "summary": _summary([p[2] for p in points]),
                   "points": [{"task_id": p[0], "epoch": p[1], "value": p[2],
                               "time": p[3].isoformat()} for p in points]},
                  meta={"since": since.isoformat()})
    summaries = {name: _summary([p[2] for p in metric_points(service.store, name=name,
                                                             since=since)])
                 for name in METRICS}
    return ok({"timeframe": timeframe, "metrics": summaries}, meta={"since": since.isoformat()})


@router.get("/analytics/usage", responses=READ_ERRORS)
def usage(service: ServiceDep, key: ReadKey,
          timeframe: Annotated[Timeframe, Query(description="1h, 24h, 7d or 30d")] = "30d",
          ) -> Response:
    """Tasks, compute seconds, samples and TFLOP per API key."""
    admin = "admin" in granted(key.permissions)
    names = {k.key_id: k.name for k in service.store.list_api_keys()} if admin else {}
    rows = []
    for u in usage_by_key(service.store, since=_since(timeframe)):
        if not admin and u.key_id != key.key_id:
            continue
        rows.append({"key_id": u.key_id, "name": names.get(u.key_id or "", key.name if
                                                           u.key_id == key.key_id else None),
                     "tasks": u.tasks, "tasks_completed": u.completed,
                     "compute_seconds": u.compute_seconds, "samples": u.samples,
                     "tflop": u.tflop})
    return ok({"timeframe": timeframe, "keys": rows},
              meta={"scope": "all keys" if admin else "this key"})


@router.get("/system/health", tags=["system"])
def health(service: ServiceDep) -> Response:
    """Liveness and store reachability (no auth)."""
    try:
        service.store.count_models()
        store_ok = True
    except Exception:
        store_ok = False
    return ok({"status": "ok" if store_ok else "degraded", "store": store_ok,
               "version": __version__, "uptime_s": time.time() - _STARTED,
               "targets": service.targets},
              status_code=200 if store_ok else 503)


@router.get("/system/version", tags=["system"])
def version() -> Response:
    """Server and API versions (no auth)."""
    return ok({"version": __version__, "api_version": API_VERSION,
               "supported_versions": [API_VERSION], "base_path": f"/api/{API_VERSION}"})
