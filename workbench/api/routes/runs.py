"""``/api/runs``: training status (polled hard: served from the service's run cache)."""

from __future__ import annotations

import threading

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...store import RunRecord
from ..deps import ServiceDep
from ..errors import ERROR_RESPONSES
from ..policy import requires
from ..schemas import RunPublic
from ..views import json_response, run_view

router = APIRouter(prefix="/runs", tags=["runs"])

# The service hands out the same RunRecord object until an event changes the run, so the
# serialized body can be reused while the record is the same object.
_bodies: dict[str, tuple[RunRecord, bytes]] = {}
_bodies_lock = threading.Lock()


@router.get("/{run_id}", response_model=RunPublic, responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
async def get_run(run_id: str, service: ServiceDep) -> Response:
    """State, epoch, latest metrics and (once succeeded) the param_id of a run."""
    # In memory for active runs (the service projects their events); a store read, when one
    # is needed, runs off the event loop so it never stalls the other requests.
    run = service.cached_run(run_id)
    if run is None:
        run = await run_in_threadpool(service.get_run, run_id)
    cached = _bodies.get(run_id)
    if cached is not None and cached[0] is run:
        body = cached[1]
    else:
        body = orjson.dumps(run_view(run))
        with _bodies_lock:
            if len(_bodies) > 4096:
                _bodies.clear()
            _bodies[run_id] = (run, body)
    return Response(body, media_type="application/json")


@router.post("/{run_id}/cancel", response_model=RunPublic, responses=ERROR_RESPONSES,
             dependencies=[Depends(requires("train", others="admin", owner_param="run_id"))])
def cancel_run(run_id: str, service: ServiceDep) -> Response:
    """Ask a queued or running run to stop (it ends ``cancelled``). Needs ``train`` for a run
    this key started, ``admin`` for any other."""
    return json_response(run_view(service.cancel_run(run_id)))
