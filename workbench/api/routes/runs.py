"""``/api/runs``: training status (polled hard: served from the service's run cache)."""

from __future__ import annotations

import threading
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ...service.errors import Conflict
from ...store import RunRecord
from ..deps import ServiceDep
from ..errors import ERROR_RESPONSES, QUEUE_FULL_RESPONSE, error_response
from ..policy import requires
from ..schemas import ErrorBody, RunPublic
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
    return Response(run_body(run), media_type="application/json")


def run_body(run: RunRecord) -> bytes:
    """The JSON of ``run``'s view, serialized once per record object."""
    cached = _bodies.get(run.run_id)
    if cached is not None and cached[0] is run:
        return cached[1]
    body = orjson.dumps(run_view(run))
    with _bodies_lock:
        if len(_bodies) > 4096:
            _bodies.clear()
        _bodies[run.run_id] = (run, body)
    return body


@router.post("/{run_id}/cancel", response_model=RunPublic, responses=ERROR_RESPONSES,
             dependencies=[Depends(requires("train", others="admin", owner_param="run_id"))])
def cancel_run(run_id: str, service: ServiceDep) -> Response:
    """Ask a queued or running run to stop (it ends ``cancelled``). Needs ``train`` for a run
    this key started, ``admin`` for any other."""
    return json_response(run_view(service.cancel_run(run_id)))


# ---- pause / resume / move (workbench.service.checkpoints) --------------------------------------
_STATE_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorBody, "description": "the run's state does not allow it "
                         "(e.g. resuming a run that is not paused)"}}


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str | None = Field(default=None, min_length=1, max_length=200,
                               description="where to continue: local, local-kernel, ray or a "
                               "registered node id (default: where it ran)")


@router.post("/{run_id}/pause", response_model=RunPublic, status_code=202,
             responses={**ERROR_RESPONSES, **_STATE_CONFLICT},
             dependencies=[Depends(requires("train", others="admin", owner_param="run_id"))])
def pause_run(run_id: str, service: ServiceDep) -> Response:
    """Pause a run: a running one checkpoints at the end of its current epoch, then is
    ``paused`` (poll it); a queued one is paused at once. 409 for a finished run or a target
    that cannot pause (only ``local`` runs pause while training). Same scope as cancel."""
    try:
        run = service.pause_run(run_id)
    except Conflict as exc:
        return error_response(409, "the run cannot be paused", [str(exc)])
    return json_response(run_view(run), status_code=202)


@router.post("/{run_id}/resume", response_model=RunPublic, status_code=202,
             responses={**ERROR_RESPONSES, **_STATE_CONFLICT, **QUEUE_FULL_RESPONSE},
             dependencies=[Depends(requires("train", others="admin", owner_param="run_id"))])
def resume_run(run_id: str, service: ServiceDep, body: ResumeRequest | None = None) -> Response:
    """Queue a paused run again from its last checkpoint, on ``target`` (another target
    moves it); its epochs go on numbering. 409 for a run that is not paused, 422 for an
    unknown target. Same scope as cancel."""
    target = body.target if body is not None else None
    try:
        run = service.resume_run(run_id, target=target)
    except Conflict as exc:
        return error_response(409, "the run cannot be resumed", [str(exc)])
    except ValueError as exc:
        return error_response(422, "input validation failed", [str(exc)])
    return json_response(run_view(run), status_code=202)
