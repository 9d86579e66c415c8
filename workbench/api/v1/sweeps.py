"""``/api/v1/sweeps``: the sweeps of ``/api/sweeps`` (workbench.sweeps) in the v1 envelope.

    POST /api/v1/sweeps  ·  GET /api/v1/sweeps  ·  GET /api/v1/sweeps/{sweep_id}
    POST /api/v1/sweeps/{sweep_id}/cancel

A bad spec is 422 VALIDATION_ERROR with ``details.field`` (``space.lr.low``, ``target``, ...).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ...store import ApiKeyRecord
from ...sweeps import SweepSpec
from ..deps import ServiceDep
from .conventions import ID_ERRORS, READ_ERRORS, ok
from .security import ReadKey, TrainKey, require

router = APIRouter(prefix="/sweeps", tags=["sweeps"])

# Cancelling: train for a sweep this key created, admin for any other (workbench.api.policy).
CancelKey = Annotated[ApiKeyRecord, Depends(require("train", others="admin",
                                                    owner_param="sweep_id"))]


@router.post("", status_code=201, responses=READ_ERRORS)
def create_sweep(body: SweepSpec, service: ServiceDep, key: TrainKey) -> Response:
    """Start a sweep (``data``: the sweep)."""
    return ok(service.sweeps.create(body, owner_key=key.key_id), status_code=201)


@router.get("", responses=READ_ERRORS)
def list_sweeps(service: ServiceDep, _: ReadKey) -> Response:
    """Every sweep, newest first (``data {sweeps, total}``)."""
    sweeps = service.sweeps.list()
    return ok({"sweeps": sweeps, "total": len(sweeps)})


@router.get("/{sweep_id}", responses=ID_ERRORS)
def get_sweep(sweep_id: str, service: ServiceDep, _: ReadKey,
              importance: Annotated[bool, Query()] = False) -> Response:
    """One sweep with every trial."""
    return ok(service.sweeps.get(sweep_id, importance=importance))


@router.post("/{sweep_id}/cancel", responses=ID_ERRORS)
def cancel_sweep(sweep_id: str, service: ServiceDep, _: CancelKey) -> Response:
    """Stop the sweep and cancel its running trials."""
    return ok(service.sweeps.cancel(sweep_id))
