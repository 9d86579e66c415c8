"""The Cortex conventions of the native API: envelopes and error codes, on every ``/api/v1`` route.

Success: ``{"success": true, "data": ..., "meta": {...}}``.
Error:   ``{"success": false, "error": {"code", "message", "type", "details": {"field": ...}}}``.

``code`` is the Cortex conventions' vocabulary; ``type`` (the neurogrid document's field) names
the kind of error; ``ERROR_CODES`` maps every code to its type, its status and the neurogrid
document's code for the same case (``INVALID_REQUEST`` is our ``VALIDATION_ERROR``, ...).

Exception handlers in Starlette are app-wide, so ``install`` wraps the handlers already
registered (the MNIST MLP API's own shapes, see ``workbench.api.errors``) with a dispatcher: a
request under ``/api/v1`` gets the envelope, anything else goes to the previous handler
unchanged. That covers FastAPI's own 404/405/422 too.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...service.errors import Conflict, InvalidInput, NotFound, QueueFull, SubmitError

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
PLUGIN_CORE_PREFIX = "/api/plugin-core"  # the conventions' namespaces: same envelope and codes
API_VERSION = "v1"

AUTH_INVALID = "AUTH_INVALID"
FORBIDDEN = "FORBIDDEN"
RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
VALIDATION_ERROR = "VALIDATION_ERROR"
CONFLICT = "CONFLICT"  # the request contradicts the resource's state (results of a running job)
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"  # the run queue is full: retry after Retry-After
INTERNAL_ERROR = "INTERNAL_ERROR"

NODE_UNAVAILABLE = "NODE_UNAVAILABLE"  # a node or worker did not answer (502)

# code -> (error type, usual HTTP status, the neurogrid document's code for the same case)
ERROR_CODES: dict[str, tuple[str, int, str]] = {
    VALIDATION_ERROR: ("ValidationError", 422, "INVALID_REQUEST"),
    AUTH_INVALID: ("AuthenticationError", 401, "UNAUTHORIZED"),
    FORBIDDEN: ("PermissionError", 403, "FORBIDDEN"),
    RESOURCE_NOT_FOUND: ("NotFoundError", 404, "NOT_FOUND"),
    METHOD_NOT_ALLOWED: ("InvalidRequestError", 405, "INVALID_REQUEST"),
    CONFLICT: ("ConflictError", 409, "MODEL_UNAVAILABLE"),
    RATE_LIMIT_EXCEEDED: ("RateLimitError", 429, "RATE_LIMITED"),
    NODE_UNAVAILABLE: ("NodeUnavailableError", 502, "NODE_UNAVAILABLE"),
    SERVICE_UNAVAILABLE: ("ServiceUnavailableError", 503, "NODE_UNAVAILABLE"),
    INTERNAL_ERROR: ("InternalError", 500, "INTERNAL_ERROR"),
    "UNSUPPORTED_MEDIA_TYPE": ("InvalidRequestError", 415, "INVALID_REQUEST"),
}


def error_type(code: str) -> str:
    return ERROR_CODES.get(code, ("HttpError",))[0]


_STATUS_CODES = {
    401: AUTH_INVALID, 403: FORBIDDEN, 404: RESOURCE_NOT_FOUND, 405: METHOD_NOT_ALLOWED,
    409: CONFLICT, 413: VALIDATION_ERROR, 422: VALIDATION_ERROR, 429: RATE_LIMIT_EXCEEDED,
    503: SERVICE_UNAVAILABLE,
}


def is_v1_path(scope: Mapping[str, Any]) -> bool:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return any(path == p or path.startswith(p + "/") for p in (PREFIX, PLUGIN_CORE_PREFIX))


# ---- envelopes --------------------------------------------------------------------------------
T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    data: T
    meta: dict[str, Any] = Field(default_factory=dict)


class ErrorDetail(BaseModel):
    code: str = Field(description="AUTH_INVALID, FORBIDDEN, RATE_LIMIT_EXCEEDED, "
                      "RESOURCE_NOT_FOUND, VALIDATION_ERROR, CONFLICT, ...")
    message: str
    type: str = Field(description="ValidationError, AuthenticationError, NotFoundError, ...")
    details: dict[str, Any] = Field(default_factory=dict,
                                    description="'field' names the offending input")


class ErrorEnvelope(BaseModel):
    success: bool = False
    error: ErrorDetail


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "invalid request", 401: "missing, invalid, revoked or expired API key",
            403: "the key lacks the permission", 404: "unknown id", 409: "state conflict",
            422: "validation error", 429: "rate limit or concurrency limit exceeded",
            503: "the run queue is full (SERVICE_UNAVAILABLE); retry after Retry-After"}
    return {s: {"model": ErrorEnvelope, "description": text[s]} for s in statuses}


# Documented error responses for routes (401 and 429 apply to every authenticated route).
READ_ERRORS = _responses(401, 403, 422, 429)
ID_ERRORS = _responses(401, 403, 404, 422, 429)


def ok(data: Any, *, meta: Mapping[str, Any] | None = None, status_code: int = 200,
       headers: Mapping[str, str] | None = None) -> Response:
    """The success envelope (orjson: NaN/inf become null, never invalid JSON)."""
    body = orjson.dumps({"success": True, "data": data, "meta": dict(meta or {})},
                        option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status_code, media_type="application/json",
                    headers=dict(headers or {}))


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> bytes:
    return orjson.dumps({"success": False, "error": {
        "code": code, "message": message, "type": error_type(code),
        "details": dict(details or {})}})


def fail(status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
         headers: Mapping[str, str] | None = None) -> Response:
    return Response(error_body(code, message, details), status_code=status,
                    media_type="application/json", headers=dict(headers or {}))


class ApiError(Exception):
    """Raised by v1 routes; becomes the error envelope."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None,
                 details: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = dict(details or {})
        if field is not None:
            self.details.setdefault("field", field)
        self.headers = dict(headers or {})


def validation_error(field: str, message: str, **details: Any) -> ApiError:
    return ApiError(422, VALIDATION_ERROR, f"{field}: {message}", field=field, details=details)


def submit_error(exc: SubmitError, fields: Mapping[str, str] | None = None) -> ApiError:
    """A service ``SubmitError`` as VALIDATION_ERROR, its field renamed to this route's
    vocabulary (``{"architecture": "neural_model_config", ...}``)."""
    field = (fields or {}).get(exc.field, exc.field)
    return validation_error(field, exc.message)


def queue_full(exc: QueueFull) -> ApiError:
    return ApiError(503, SERVICE_UNAVAILABLE, str(exc),
                    details={"queued": exc.queued, "limit": exc.limit},
                    headers={"Retry-After": str(exc.retry_after_s)})


def not_found(kind: str, id_: str, field: str) -> ApiError:
    return ApiError(404, RESOURCE_NOT_FOUND, f"{kind} {id_!r} not found", field=field,
                    details={"id": id_})


# ---- pydantic errors -> details --------------------------------------------------------------
def _loc(parts: Sequence[Any]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".")


def field_errors(errors: Sequence[Mapping[str, Any]], *, prefix: str = "") -> list[dict[str, str]]:
    """``[{"field": "training_config.batch_size", "message": ...}]``; the request-part head of
    FastAPI locations (``body``/``query``/``path``) is dropped."""
    out = []
    for err in errors:
        loc = list(err.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        where = _loc(loc)
        if prefix:
            where = f"{prefix}.{where}" if where else prefix
        message = str(err.get("msg")).removeprefix("Value error, ")
        out.append({"field": where or "body", "message": message})
    return out


def validation_failed(errors: list[dict[str, str]]) -> Response:
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return fail(422, VALIDATION_ERROR, message, {"field": first["field"], "errors": errors})


def pydantic_error(exc: ValidationError, *, prefix: str = "") -> ApiError:
    errors = field_errors(exc.errors(), prefix=prefix)
    first = errors[0] if errors else {"field": prefix or "body", "message": str(exc)}
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return ApiError(422, VALIDATION_ERROR, message, field=first["field"],
                    details={"errors": errors})


# ---- handlers --------------------------------------------------------------------------------
Handler = Callable[[Request, Any], Awaitable[Response] | Response]


async def _v1_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return fail(exc.status, exc.code, exc.message, exc.details, exc.headers)
    if isinstance(exc, RequestValidationError):
        return validation_failed(field_errors(exc.errors()))
    if isinstance(exc, ValidationError):  # spec validation raised by the service
        return validation_failed(field_errors(exc.errors()))
    if isinstance(exc, NotFound):
        return fail(404, RESOURCE_NOT_FOUND, str(exc), {"field": f"{exc.kind}_id", "id": exc.id})
    if isinstance(exc, InvalidInput):
        return fail(422, VALIDATION_ERROR, str(exc), {"field": "inputs", "errors": exc.errors})
    if isinstance(exc, SubmitError):
        error = submit_error(exc)
        return fail(error.status, error.code, error.message, error.details)
    if isinstance(exc, QueueFull):
        error = queue_full(exc)
        return fail(error.status, error.code, error.message, error.details, error.headers)
    if isinstance(exc, Conflict):
        return fail(409, CONFLICT, str(exc))
    if isinstance(exc, StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return fail(exc.status_code, code, message, headers=exc.headers)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return fail(500, INTERNAL_ERROR, "internal server error")


def _dispatch(app: FastAPI, exc_class: type[Exception] | int) -> None:
    previous: Handler | None = app.exception_handlers.get(exc_class)

    async def handler(request: Request, exc: Exception) -> Response:
        if is_v1_path(request.scope):
            return await _v1_response(request, exc)
        if previous is None:
            if exc_class is Exception:
                return PlainTextResponse("Internal Server Error", status_code=500)
            raise exc
        result = previous(request, exc)
        return await result if inspect.isawaitable(result) else result

    app.add_exception_handler(exc_class, handler)


def install(app: FastAPI) -> None:
    """Envelope every error under ``/api/v1``; call after the app's own handlers exist."""
    for exc_class in (ApiError, RequestValidationError, ValidationError, NotFound, InvalidInput,
                      SubmitError, QueueFull, Conflict, StarletteHTTPException, Exception):
        _dispatch(app, exc_class)
