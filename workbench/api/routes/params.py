"""``/api/params``: trained parameters as the API's Parameters JSON."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ..deps import ServiceDep
from ..errors import ERROR_RESPONSES
from ..policy import requires
from ..schemas import ParamsPublic
from ..views import json_response

router = APIRouter(prefix="/params", tags=["params"])


@router.get("/{param_id}", response_model=ParamsPublic, responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
def get_params(param_id: str, service: ServiceDep) -> Response:
    """Weights of a trained run (``W`` is [out][in]) and their size in bytes."""
    record, parameters = service.get_params(param_id)
    return json_response({
        "param_id": record.param_id,
        "model_id": record.model_id,
        "run_id": record.run_id,
        "parameters": parameters.model_dump(mode="json", exclude_none=True),
        "size_bytes": record.size_bytes,
    })
