"""``GET /api/runs`` (every run, newest first) and ``/api/runs/{run_id}/events`` (a run's event
log, resumable from the last event id seen): what faces need to list and follow runs.

    GET /api/runs?state=running&limit=50          -> newest first, any model; next_cursor pages

    GET /api/runs/r_.../events?after=0            -> every stored event, oldest first
    GET /api/runs/r_.../events?after=42&wait=20   -> events after id 42; waits up to 20 s for one

Every event has an increasing integer ``id``. A client that reconnects (a browser reload, a
notebook kernel restart, ``workbench watch`` re-attached) passes the last id it saw and gets
everything after it, in order, exactly once. ``wait`` makes it a long poll: the answer comes as
soon as the run has a new event (or ends), so following a run costs one request per event
batch, not a polling loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from ...store import RunRecord
from ..deps import ServiceDep
from ..errors import ERROR_RESPONSES, error_response
from ..policy import requires
from ..schemas import RunEvents, RunPage
from ..views import json_response, run_view

router = APIRouter(prefix="/runs", tags=["runs"])

MAX_WAIT_S = 60.0
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@router.get("", response_model=RunPage, responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
def list_all_runs(
    service: ServiceDep,
    state: Annotated[Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"] | None,
                     Query()] = None,
    model_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Any:
    """Runs of every model, newest first; follow ``next_cursor`` for older ones."""
    try:
        runs, next_cursor = service.list_runs(model_id=model_id, state=state, limit=limit,
                                              cursor=cursor, order="desc")
    except ValueError as exc:
        return error_response(422, "input validation failed", [f"cursor: {exc}"])
    return json_response({"items": [run_view(r) for r in runs], "next_cursor": next_cursor})


@router.get("/{run_id}/events", response_model=RunEvents, responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
async def run_events(
    run_id: str, service: ServiceDep,
    after: int = Query(0, ge=0, le=2**62, description="the last event id already seen"),
    wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S,
                        description="seconds to wait for a new event when there is none yet"),
    limit: int = Query(1000, ge=1, le=10_000, description="at most this many events"),
) -> Any:
    """Events of a run with ``id > after``, oldest first, plus the run's state."""
    run: RunRecord = await run_in_threadpool(service.get_run, run_id)  # 404 if unknown
    events = await run_in_threadpool(service.store.list_events, run_id, after_id=after,
                                     limit=limit)
    if not events and wait > 0 and run.state not in TERMINAL_STATES:
        await _wait_for_event(service, run_id, after, wait)
        events = await run_in_threadpool(service.store.list_events, run_id, after_id=after,
                                         limit=limit)
        run = await run_in_threadpool(service.get_run, run_id)
    return json_response({
        "run_id": run_id, "state": run.state, "events": [_public(e) for e in events],
        "last_id": events[-1]["id"] if events else after,
    })


async def _wait_for_event(service: Any, run_id: str, after: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    arrived = asyncio.Event()

    def on_event(_event: dict[str, Any]) -> None:  # executor threads
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(arrived.set)

    unsubscribe = service.bus.subscribe(on_event, run_id=run_id)
    try:
        # An event may have landed between the caller's read and the subscription.
        if await run_in_threadpool(service.store.list_events, run_id, after_id=after, limit=1):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), timeout)
    finally:
        unsubscribe()


def _public(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    if "parameters_safetensors_b64" in data:  # weights are served by /api/params, not here
        data = {k: v for k, v in data.items() if k != "parameters_safetensors_b64"}
    return {**event, "data": data}
