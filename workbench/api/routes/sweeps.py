"""``/api/sweeps``: Optuna sweeps whose trials are runs of one experiment (workbench.sweeps).

    POST /api/sweeps                     a sweep spec -> 201 the sweep (it starts at once)
    GET  /api/sweeps                     {"items": [...]} newest first (counts, best so far)
    GET  /api/sweeps/{sweep_id}?importance=true   the sweep with every trial (+ importances)
    POST /api/sweeps/{sweep_id}/cancel   stop starting trials, cancel the running ones

A bad spec is a 422 naming the field (``space.lr.low: ...``). Creating needs ``train``;
cancelling needs ``train`` for a sweep this key created, ``admin`` for any other.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ...service.errors import QueueFull, SubmitError
from ...sweeps import SweepSpec
from ..deps import ServiceDep
from ..errors import ERROR_RESPONSES, error_response
from ..policy import TrainKey, requires
from ..views import json_response

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


@router.post("", status_code=201, responses=ERROR_RESPONSES)
def create_sweep(body: SweepSpec, service: ServiceDep, key: TrainKey) -> Response:
    """Start a sweep: ``parallelism`` trials at a time on ``target`` until the budget."""
    try:
        sweep = service.sweeps.create(body, owner_key=key.key_id if key else None)
    except (SubmitError, QueueFull) as exc:
        return error_response(422, "input validation failed", [str(exc)])
    return json_response(sweep, status_code=201)


@router.get("", responses=ERROR_RESPONSES, dependencies=[Depends(requires("read"))])
def list_sweeps(service: ServiceDep) -> Response:
    """Every sweep, newest first: state, trial counts, the best trial so far."""
    return json_response({"items": service.sweeps.list()})


@router.get("/{sweep_id}", responses=ERROR_RESPONSES, dependencies=[Depends(requires("read"))])
def get_sweep(sweep_id: str, service: ServiceDep,
              importance: Annotated[bool, Query(description="add fANOVA parameter "
                                                "importances (optuna.importance)")] = False,
              ) -> Response:
    """One sweep with every trial: state, run, value, parameters, the objective per epoch."""
    return json_response(service.sweeps.get(sweep_id, importance=importance))


@router.post("/{sweep_id}/cancel", responses=ERROR_RESPONSES,
             dependencies=[Depends(requires("train", others="admin", owner_param="sweep_id"))])
def cancel_sweep(sweep_id: str, service: ServiceDep) -> Response:
    """Stop the sweep: no new trials, running ones cancelled (it ends ``cancelled``)."""
    return json_response(service.sweeps.cancel(sweep_id))
