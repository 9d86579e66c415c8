"""``/api/infer`` and ``/api/infer_adhoc``: forward passes.

``/infer`` parses its JSON body with pydantic's JSON validator (``model_validate_json``), not the
stdlib ``json`` FastAPI uses (~30 ms instead of ~200 ms for 512 inputs). It also takes the
inputs as raw little-endian float32 (``Content-Type: application/octet-stream``, row-major)
with ``?param_id=...&shape=N,784`` (or an ``X-Inputs-Shape: N,784`` header).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from ..deps import BodyDep, ServiceDep
from ..errors import ERROR_RESPONSES, error_response, validation_error_response
from ..policy import requires
from ..schemas import MAX_BATCH, InferAdhocRequest, InferRequest, InferResponse
from ..views import json_response

# Inference reads a trained model and stores nothing: ``read`` (workbench.api.policy).
router = APIRouter(tags=["infer"])

_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary",
                           "description": "N*input_size little-endian float32, row-major"}
            },
        },
    }
}


def _invalid(*errors: str) -> Response:
    return error_response(422, "input validation failed", list(errors))


def _binary_inputs(body: bytes, shape: str | None) -> np.ndarray | Response:
    if not shape:
        return _invalid("shape: give ?shape=N,WIDTH (or an X-Inputs-Shape header) "
                        "with a binary body")
    try:
        n, width = (int(v) for v in shape.split(","))
    except ValueError:
        return _invalid(f"shape: expected 'N,WIDTH' (two integers), got {shape[:50]!r}")
    if not (1 <= n <= MAX_BATCH) or width < 1:
        return _invalid(f"shape: N must be in 1..{MAX_BATCH} and WIDTH >= 1, got {n},{width}")
    if len(body) != n * width * 4:
        return _invalid(f"body: shape {n},{width} needs {n * width * 4} bytes of float32, "
                        f"got {len(body)}")
    return np.frombuffer(body, dtype="<f4").reshape(n, width)


@router.post("/infer", response_model=InferResponse, responses=ERROR_RESPONSES,
             openapi_extra=_INFER_BODY, dependencies=[Depends(requires("read"))])
async def infer(
    request: Request, body: BodyDep, service: ServiceDep,
    param_id: Annotated[str | None, Query(max_length=200, description="binary body only")] = None,
    shape: Annotated[str | None, Query(max_length=50, description="binary body only: N,WIDTH")]
    = None,
    logits: Annotated[bool, Query(description="binary body only")] = False,
    probabilities: Annotated[bool, Query(description="binary body only")] = True,
    labels: Annotated[bool, Query(description="binary body only")] = True,
) -> Response:
    """Run a trained model (by ``param_id``) on up to 512 inputs."""
    content_type = request.headers.get("content-type", "application/json")
    if content_type.startswith("application/octet-stream"):
        if not param_id:
            return _invalid("param_id: required as a query parameter with a binary body")
        x = _binary_inputs(body, shape or request.headers.get("x-inputs-shape"))
        if isinstance(x, Response):
            return x
        result = service.infer(param_id, x, logits=logits, probabilities=probabilities,
                               labels=labels)
        return json_response(result)
    try:
        req = InferRequest.model_validate_json(body)
    except ValidationError as exc:
        return validation_error_response(exc.errors())
    want = req.return_
    result = service.infer(req.param_id, req.inputs, logits=want.logits,
                           probabilities=want.probabilities, labels=want.labels)
    return json_response(result)


@router.post("/infer_adhoc", response_model=InferResponse, responses=ERROR_RESPONSES,
             dependencies=[Depends(requires("read"))])
def infer_adhoc(body: InferAdhocRequest, service: ServiceDep) -> Response:
    """Forward pass with an inline architecture and parameters; nothing is stored."""
    want = body.return_
    try:
        result = service.infer_adhoc(body.architecture, body.parameters, body.inputs,
                                     logits=want.logits, probabilities=want.probabilities,
                                     labels=want.labels)
    except ValueError as exc:
        if type(exc) is not ValueError:  # InvalidInput -> 422 via its handler
            raise
        return error_response(400, "parameters do not fit the architecture", [str(exc)])
    return json_response(result)
