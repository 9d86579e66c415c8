"""Error translation: every client mistake becomes a documented status with a body that says
which field and why (``{"detail": ..., "errors": [...]}``); never a 500.

Status codes (MNIST MLP API):
- 400 the body is not JSON, or a model definition (architecture, hyperparams, parameters) is
  invalid, e.g. a dimension mismatch;
- 401 no or bad bearer token;  404 unknown or malformed id;
- 409 a hyperparameter override that contradicts the model's stored hyperparameters;
- 413 body over the upload limit;
- 422 any other input validation: inference inputs (width, non-finite, batch over 512), query
  parameters, missing fields, a run that does not fit its dataset, device or target;
- 503 the run queue is full (``Retry-After`` says when to try again).

Limits (``settings.limits``) are the service's ``SubmitError``: 400 when the field is part of
the model definition (``architecture``, ``hyperparams.batch_size``), 422 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..service.errors import Conflict, InvalidInput, NotFound, QueueFull, SubmitError
from .schemas import ErrorBody

_DEFINITION_FIELDS = {"architecture", "hyperparams", "parameters"}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "invalid JSON or invalid model definition"},
    401: {"model": ErrorBody, "description": "missing or invalid bearer token"},
    404: {"model": ErrorBody, "description": "unknown id"},
    413: {"model": ErrorBody, "description": "request body over the size limit"},
    422: {"model": ErrorBody, "description": "input validation failed"},
    429: {"model": ErrorBody, "description": "rate limit exceeded (X-RateLimit-*, Retry-After)"},
}
QUEUE_FULL_RESPONSE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "the run queue is full; retry after Retry-After"},
}


def error_response(status: int, detail: str, errors: Sequence[str] = (),
                   headers: Mapping[str, str] | None = None) -> Response:
    body = orjson.dumps({"detail": detail, "errors": list(errors)})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _loc(parts: Iterable[Any]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".")


def validation_messages(errors: Sequence[Any], *, drop_body: bool = True) -> list[str]:
    lines = []
    for err in errors:
        if err.get("type") == "json_invalid":
            why = (err.get("ctx") or {}).get("error") or err.get("msg")
            lines.append(f"body: invalid JSON ({why})")
            continue
        loc = list(err.get("loc", ()))
        if drop_body and loc and loc[0] == "body":
            loc = loc[1:]
        where = _loc(loc)
        lines.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return lines


def validation_status(errors: Sequence[Any]) -> int:
    """400 for broken JSON or an invalid model definition, 422 for everything else."""
    for err in errors:
        if err.get("type") == "json_invalid":
            return 400
        loc = [p for p in err.get("loc", ()) if p != "body"]
        if loc and loc[0] in _DEFINITION_FIELDS:
            return 400
    return 422


def validation_error_response(errors: Sequence[Any]) -> Response:
    status = validation_status(errors)
    detail = "invalid JSON or model definition" if status == 400 else "input validation failed"
    return error_response(status, detail, validation_messages(errors))


def submit_error_response(exc: SubmitError) -> Response:
    if exc.field.split(".")[0].split("[")[0] in _DEFINITION_FIELDS:
        return error_response(400, "invalid model definition", [str(exc)])
    return error_response(422, "input validation failed", [str(exc)])


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> Response:
        return validation_error_response(exc.errors())

    @app.exception_handler(ValidationError)
    async def _pydantic(request: Request, exc: ValidationError) -> Response:
        # Raised by the service (spec validation): always about a model definition.
        from ..spec import error_messages

        return error_response(400, "invalid model definition", error_messages(exc))

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        return error_response(404, str(exc), [f"{exc.kind}_id: no {exc.kind} {exc.id!r}"])

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> Response:
        return error_response(409, "inconsistent hyperparameters", [str(exc)])

    @app.exception_handler(InvalidInput)
    async def _invalid_input(request: Request, exc: InvalidInput) -> Response:
        return error_response(422, "input validation failed", exc.errors)

    @app.exception_handler(SubmitError)
    async def _submit(request: Request, exc: SubmitError) -> Response:
        return submit_error_response(exc)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> Response:
        return error_response(503, "the run queue is full", [str(exc)],
                              headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)
