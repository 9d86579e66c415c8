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
from ...executors.registry import NOT_INSTALLED, install
from ...store.usage import metric_points, run_counts, run_owners, usage_by_key
from ..deps import ServiceDep
from .conventions import API_VERSION, READ_ERRORS, ok
from .security import ReadKey, granted
from .tasks import all_runs
from .views import compute_hours, task_cost

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


def _availability(service: Any) -> float:
    """``network_uptime``: the share (percent) of compute targets that can take a run now --
    this machine's targets always (but one whose optional extra is not installed), a node
    while it is online or busy."""
    providers = [p for p in install(service).describe() if p["status"] != NOT_INSTALLED]
    up = [p for p in providers if p["status"] in ("online", "busy")]
    return round(100.0 * len(up) / len(providers), 1) if providers else 0.0


@router.get("/analytics/stats", responses=READ_ERRORS)
def stats(request: Request, service: ServiceDep, _: ReadKey) -> Response:
    """Tasks by status, tasks today, compute hours, nodes (compute targets), deployments.
    ``average_response_time`` is the mean inference latency of this server's deployments in
    seconds (``average_response_time_ms`` the same in ms); ``network_uptime`` the percentage of
    compute targets available now."""
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = run_counts(service.store, since=midnight)
    running_targets = {r.target for r in service.list_runs(state="running", limit=500)[0]}
    deployments = list(getattr(request.app.state, "v1_deployments", {}).values())
    latencies = [lat for d in deployments for lat in d.batcher.stats.latencies_ms]
    mean_ms = sum(latencies) / len(latencies) if latencies else None
    return ok({
        "total_nodes": len(service.targets),
        "active_nodes": len(running_targets),
        "total_tasks": counts["total"],
        "total_tasks_today": counts["created_since"],
        "tasks_by_status": counts["by_state"],
        "average_task_duration_s": counts["mean_duration_s"],
        "total_compute_hours": counts["compute_seconds"] / 3600.0,
        "deployments": len(deployments),
        "average_response_time": None if mean_ms is None else mean_ms / 1000.0,
        "average_response_time_ms": mean_ms,
        "network_uptime": _availability(service),
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


def _duration_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m"


def _current_month(service: Any, key: Any, admin: bool) -> dict[str, Any]:
    """The neurogrid ``current_month`` of this key's runs (every key's for an admin), from
    the compute accounting of ``views``: cost = compute hours x the configured price."""
    start = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0,
                                               microsecond=0)
    owners = run_owners(service.store)
    runs = [r for r in all_runs(service) if r.created_at >= start
            and (admin or owners.get(r.run_id) == key.key_id)]
    seconds = sum(compute_hours(r) for r in runs) * 3600.0
    return {"tasks_completed": sum(1 for r in runs if r.state == "succeeded"),
            "total_cost": round(sum(task_cost(r) for r in runs), 6),
            "compute_time": _duration_text(seconds), "compute_seconds": round(seconds, 3),
            # An MLP workbench generates no tokens; kept for the document's shape.
            "tokens_generated": 0, "since": start.isoformat()}


@router.get("/analytics/usage", responses=READ_ERRORS)
def usage(service: ServiceDep, key: ReadKey,
          timeframe: Annotated[Timeframe, Query(description="1h, 24h, 7d or 30d")] = "30d",
          ) -> Response:
    """Your usage as the neurogrid document shows it (``current_month``, ``limits``: this
    workbench sets no monthly task or budget limit, so both are null), plus tasks, compute
    seconds, samples and TFLOP per API key over ``timeframe`` (``keys``)."""
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
    return ok({"current_month": _current_month(service, key, admin),
               "limits": {"monthly_tasks": None, "monthly_budget": None},
               "timeframe": timeframe, "keys": rows},
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
