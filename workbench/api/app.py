"""The FastAPI app: the MNIST MLP API under ``/api``, behind bearer-token auth.

    app = create_app()            # opens the store in $WORKBENCH_HOME and owns it
    app = create_app(service)     # or serve an existing Workbench

This module only assembles: routers per resource (``routes/``), error translation
(``errors.py``), dependencies (``deps.py``), the body-size guard (``limits.py``), the
cross-site guard (``csrf.py``: JSON bodies, same-origin ``Origin`` on every write). The API
never imports the app: ``workbench.server`` (the composition root) mounts the Panel app on the
same FastAPI app; our routes stay off ``/`` and ``/static`` for it, and share ``/ws`` with it
by subprotocol (``v1.ws.DocumentSocket``: Bokeh's client asks for ``bokeh``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from .. import __version__
from ..auth import KeyRing, bootstrap_admin_key
from ..config import get_settings
from ..service import Workbench
from . import errors
from .csrf import STATE_CHANGING, CrossSiteGuard
from .deps import require_key
from .limits import BodyLimit
from .routes import (
    bundles,
    events,
    experiments,
    infer,
    models,
    params,
    runs,
    sweeps,
    tracking,
    trainer,
)
from .schemas import Health, InferRequest
from .status_fast_path import RunStatusFastPath
from .v1 import mount_v1
from .v1.security import RateLimitMiddleware
from .v1.ws import DocumentSocket

log = logging.getLogger(__name__)

API_PREFIX = "/api"

DESCRIPTION = """The MNIST MLP API of nn-workbench.

Every endpoint except `/api/health` needs `Authorization: Bearer <key>` (401 otherwise).
Status codes: 400 invalid JSON or model definition (architecture / hyperparams / parameters,
e.g. a dimension mismatch); 404 unknown or malformed id; 409 a training override inconsistent
with the model's stored hyperparameters (e.g. `epochs` above the model's `max_epochs`);
413 body over the upload limit; 422 other input validation (inference inputs of the wrong
width, non-finite values, more than 512 inputs; bad query parameters). Error bodies are
`{"detail": ..., "errors": ["field: why", ...]}`.

Inference inputs are in the space the model was trained in: pixels scaled to [0, 1], then
standardised with the data set's mean and std (as `workbench.data.load_splits` returns them).
"""


def create_app(
    service: Workbench | None = None, *, max_body_bytes: int | None = None,
    token: str | None = None, close_service: bool | None = None,
) -> FastAPI:
    """Build the app. Without ``service`` it opens the default store. The service is closed
    on shutdown when ``close_service`` (default: when this function made it).
    ``app.state.generated_key`` holds an admin key generated on the first start of an empty
    store (None otherwise): the caller shows it once."""
    settings = get_settings()
    owns_service = service is None if close_service is None else close_service
    service = service or _default_service()
    keyring_store = service.store
    generated = bootstrap_admin_key(keyring_store, token or settings.token)
    keyring = KeyRing(keyring_store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resumed = service.resume_queued()
        if resumed:
            log.info("re-dispatched %d queued run(s)", len(resumed))
        try:
            yield
        finally:
            app.state.webhooks.close()  # workbench.service.webhooks: its delivery thread
            if owns_service:
                service.close()

    app = FastAPI(
        title="nn-workbench", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        docs_url=f"{API_PREFIX}/explorer", redoc_url=None, openapi_url=f"{API_PREFIX}/openapi.json",
        **_telemetry_options(settings.opentelemetry),
    )
    app.state.service = service
    app.state.keyring = keyring
    app.state.generated_key = generated
    errors.install(app)

    @app.get(f"{API_PREFIX}/health", response_model=Health, tags=["health"])
    async def health() -> dict[str, Any]:
        """Readiness probe (no auth)."""
        return {"status": "ok", "version": __version__}

    api = APIRouter(prefix=API_PREFIX, dependencies=[Depends(require_key)])
    for module in (models, experiments, events, runs, params, infer, tracking, sweeps, bundles):
        api.include_router(module.router)
    app.include_router(api)
    mount_v1(app, service)  # the native /api/v1 (workbench.api.v1)
    app.include_router(trainer.router, prefix=API_PREFIX)  # the distributed-trainer API
    trainer.install(app)
    # Innermost: inside the rate limiter, whose verified key it reads (status_fast_path).
    app.add_middleware(RunStatusFastPath, route_app=app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes or settings.max_body_bytes)
    # Outermost of the API's: cross-site writes are refused before any body is read.
    trainer_paths = [API_PREFIX + getattr(r, "path", "") for r in trainer.router.routes]
    app.add_middleware(CrossSiteGuard, trainer_paths=trainer_paths)
    # Outermost: every /api answer (a 413, a cross-site 403 too) carries X-RateLimit-*.
    app.add_middleware(RateLimitMiddleware)
    # The documents' wss://host/ws is /api/v1/ws unless it is the Panel app's (Bokeh) socket.
    app.add_middleware(DocumentSocket)
    _install_openapi(app)
    return app


def _telemetry_options(wanted: bool) -> dict[str, Any]:
    """FastAPI's native OpenTelemetry (newer FastAPI) looks up the global providers on every
    request, about a quarter of a status read's CPU; with no OTEL_* setting nobody configured
    them, so it is switched off."""
    import inspect

    if wanted or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _default_service() -> Workbench:
    from ..store import Store

    return Workbench(Store())


def _trainer_bodies() -> dict[tuple[str, str], tuple[str, Any]]:
    from ..distributed.trainer import DeviceRegister, JobCreate
    from ..distributed.trainer import TrainRequest as TrainerTrainRequest

    return {
        (f"{API_PREFIX}/jobs", "post"): ("TrainerJobCreate", JobCreate),
        (f"{API_PREFIX}/devices/register", "post"): ("TrainerDeviceRegister", DeviceRegister),
        (f"{API_PREFIX}/network/train/{{job_id}}", "post"): ("TrainerTrainRequest",
                                                             TrainerTrainRequest),
    }


def _add_component(components: dict[str, Any], name: str, body: Any) -> None:
    extra = body.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
    for sub, definition in extra.pop("$defs", {}).items():
        components.setdefault(sub, definition)
    components[name] = extra


def _install_openapi(app: FastAPI) -> None:
    """Add the schemas of bodies that routes parse themselves (``/infer``, ``log-batch``) to
    the document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for body in (InferRequest, tracking.LogBatch):
            _add_component(components, body.__name__, body)
        # The distributed-trainer API parses its bodies itself (its documented 400 shape):
        # describe them, so clients and fuzzers see what each operation takes.
        for (path, method), (name, body) in _trainer_bodies().items():
            _add_component(components, name, body)
            operation = schema.get("paths", {}).get(path, {}).get(method)
            if operation is not None:
                operation["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{name}"}}}}
        _document_csrf_refusals(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document_csrf_refusals(schema: dict[str, Any]) -> None:
    """Every state-changing operation may answer what the cross-site guard (``csrf.py``)
    answers before the route runs: 415 for a body that is not JSON, 403 for a foreign Origin."""
    refusals = {"415": "the body is not application/json (or a type this route takes)",
                "403": "a foreign Origin (a cross-site request), or a key without the scope"}
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method.upper() not in STATE_CHANGING or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            for status, description in refusals.items():
                responses.setdefault(status, {"description": description})
