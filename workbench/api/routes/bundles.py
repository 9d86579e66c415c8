"""Run bundles (``workbench.bundles``): ``GET /api/runs/{id}/bundle`` exports a finished run as
one zip, ``POST /api/bundles`` imports one into this home, ``POST /api/bundles/rerun`` trains
a bundle's run again here (importing it first if needed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from ...bundles import BundleError
from ...service.errors import Conflict
from ..deps import BodyDep, ServiceDep
from ..errors import ERROR_RESPONSES, QUEUE_FULL_RESPONSE, error_response
from ..policy import TrainKey, record_run_owner, requires
from ..schemas import ErrorBody, RunPublic
from ..views import json_response, run_view

router = APIRouter(tags=["bundles"])

ZIP = "application/zip"
_ZIP_BODY = {"requestBody": {"required": True, "content": {
    ZIP: {"schema": {"type": "string", "format": "binary",
                     "description": "a run bundle (GET /api/runs/{run_id}/bundle)"}}}}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "the run is not finished (export), or this home "
          "already has the bundle's run (import)"}}


class Rerun(BaseModel):
    original_run_id: str
    run: RunPublic


def _bundle_error(exc: BundleError) -> Response:
    return error_response(422, "invalid bundle", [str(exc)])


@router.get("/runs/{run_id}/bundle", responses={
    **ERROR_RESPONSES, **_CONFLICT,
    200: {"content": {ZIP: {"schema": {"type": "string", "format": "binary"}}},
          "description": "the bundle (zip: manifest.json, metrics.json, events.jsonl, "
          "parameters.safetensors)"}}, response_class=Response,
    dependencies=[Depends(requires("read"))])
def export_bundle(run_id: str, service: ServiceDep) -> Response:
    """A finished run as one portable file: spec, hyperparameters, dataset reference and
    checksum, parameters, metrics, events and environment. 409 while it is not finished."""
    try:
        data = service.export_bundle(run_id)
    except Conflict as exc:
        return error_response(409, "the run cannot be exported yet", [str(exc)])
    return Response(data, media_type=ZIP, headers={
        "Content-Disposition": f'attachment; filename="{run_id}.wbrun.zip"'})


@router.post("/bundles", status_code=201, response_model=RunPublic,
             responses={**ERROR_RESPONSES, **_CONFLICT}, openapi_extra=_ZIP_BODY,
             dependencies=[Depends(requires("train"))])
def import_bundle(body: BodyDep, service: ServiceDep) -> Response:
    """Store a bundle's run (with its model, metrics, events and parameters) in this home
    under its own ids. 422 for a file that is not a valid bundle, 409 if the run is here."""
    try:
        run = service.import_bundle(body)
    except BundleError as exc:
        return _bundle_error(exc)
    except Conflict as exc:
        return error_response(409, "the bundle cannot be imported", [str(exc)])
    return json_response(run_view(run), status_code=201)


@router.post("/bundles/rerun", status_code=202, response_model=Rerun,
             responses={**ERROR_RESPONSES, **QUEUE_FULL_RESPONSE}, openapi_extra=_ZIP_BODY)
def rerun_bundle(
    body: BodyDep, service: ServiceDep, key: TrainKey,
    target: Annotated[str, Query(min_length=1, max_length=200,
                                 description="where to train it: local, local-kernel, ray, a node")]
    = "local",
) -> Response:
    """Train a bundle's run again as it was asked for (same architecture, hyperparameters and
    seed, dataset, sample cap), importing the original first if this home lacks it; the new
    run is tagged ``rerun``. Compare them with ``workbench rerun``."""
    try:
        original, run = service.rerun_bundle(body, target=target)
    except BundleError as exc:
        return _bundle_error(exc)
    except Conflict as exc:
        return error_response(409, "the bundle cannot be rerun", [str(exc)])
    except ValueError as exc:
        if type(exc) is not ValueError:
            raise
        return error_response(422, "input validation failed", [str(exc)])
    record_run_owner(service, run.run_id, key, via="api.rerun")
    return json_response({"original_run_id": original, "run": run_view(run)}, status_code=202)
