"""The distributed-trainer API at ``/api`` (``shared/seeds/distributed-trainer-api.md``), with
exactly its shapes: bare JSON bodies, ``{"error": "..."}`` errors, status 400/404/409/500; 422
for a non-finite number in a body, 415 for a body that is not ``application/json`` and 403 for
a cross-origin write (``workbench.api.csrf``).

    POST   /api/jobs                          create a job (model_config, dataset_config)
    GET    /api/jobs                          {"jobs": [...]}: the active ones (created,
                                              initialized, training); ?finished=true adds
                                              completed and failed jobs
    GET    /api/jobs/<job_id>                 one job (status, device count, allocation)
    POST   /api/devices/register              {"ip", "port", "job_id"} -> device_id; 409 if taken
    DELETE /api/devices/<port>
    POST   /api/network/initialize/<job_id>   allocate layers to the job's devices
    POST   /api/network/train/<job_id>        {"epochs", "learning_rate"}: pipeline training
    GET    /api/previous_teraflops            per-device TFLOPS of every past session

Authorization (``workbench.api.policy``): ``Authorization: Bearer <key>`` with the scope each
route declares -- ``read`` for the GETs, ``train`` for jobs, initialization and training,
``admin`` for registering and unregistering devices; 401/403 keep this API's ``{"error"}``
shape. A server started with ``workbench serve --trainer-open`` (``app.state.trainer_open``)
lets token-less requests from loopback addresses (127.0.0.0/8, ::1) in (``TRAINER_OPEN_GRANTS``),
so the document's curl examples work verbatim on the machine itself; a request that carries a
key is judged by its key.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...distributed.trainer import TrainerError, TrainerService
from ...store import ApiKeyRecord
from ...store.jobs import TrainerJob
from ..policy import TrainerRefused, record_run_owner, requires

log = logging.getLogger(__name__)


router = APIRouter(tags=["distributed trainer"])
API_PREFIX = "/api"  # where workbench.api.app mounts this router


def _needs(scope: str) -> list[Any]:
    return [Depends(requires(scope, family="trainer"))]


def install(app: Any) -> None:
    """The ``{"error"}`` shape for this family's 401/403 (``policy.TrainerRefused``) and for
    FastAPI's own answers on its paths (405 wrong method, 404)."""

    @app.exception_handler(TrainerRefused)
    async def _refused(request: Request, exc: TrainerRefused) -> Response:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    previous = app.exception_handlers.get(StarletteHTTPException)
    paths = [route for route in router.routes if isinstance(route, APIRoute)]

    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if is_trainer_path(request.url.path, paths):
            message = str(exc.detail)
            if exc.status_code == 405:
                message = f"method {request.method} is not allowed on {request.url.path}"
            return JSONResponse({"error": message}, status_code=exc.status_code,
                                headers=exc.headers)
        assert previous is not None
        result = previous(request, exc)
        return await result if inspect.isawaitable(result) else result

    app.add_exception_handler(StarletteHTTPException, _http)


def is_trainer_path(path: str, routes: Any = None) -> bool:
    """Whether ``path`` is one of this API's routes (any method), e.g. ``/api/jobs/1``."""
    from starlette.routing import Match

    scope = {"type": "http", "path": path.removeprefix(API_PREFIX) or "/", "method": "GET"}
    for route in routes if routes is not None else router.routes:
        if route.matches(scope)[0] != Match.NONE:
            return path.startswith(API_PREFIX + "/")
    return False


def _trainer(request: Request) -> TrainerService:
    state = request.app.state
    if getattr(state, "trainer", None) is None:
        state.trainer = TrainerService(state.service)
    return state.trainer


def _error(exc: TrainerError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status,
                        headers=getattr(exc, "headers", None))


MAX_DEPTH = 32  # nesting of arrays/objects in a body; the document's bodies need 3


async def _body(request: Request, *, optional: bool = False) -> Any:
    """The JSON body. 400 for an empty (unless ``optional``), broken or too deeply nested one;
    422 naming the field for a non-finite number (``NaN``, ``Infinity``, ``1e999``), which
    could be neither trained on nor sent back as JSON. (``CrossSiteGuard`` has already refused
    any Content-Type but JSON.)"""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return None
        raise TrainerError(400, "the request body must be JSON")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise TrainerError(400, f"the request body is nested more than {MAX_DEPTH} levels "
                           "deep") from None
    except ValueError as exc:
        raise TrainerError(400, f"the request body is not valid JSON: {exc}") from None
    _check_body(value)
    return value


def _check_body(value: Any) -> None:
    """Depth and finiteness, iteratively (a deep body must not exhaust the stack here)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise TrainerError(422, f"{where or 'body'}: must be a finite number, got "
                               f"{json.dumps(item)}")
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise TrainerError(400, f"the request body is nested more than {MAX_DEPTH} "
                                   "levels deep")
            if isinstance(item, dict):
                stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1)
                             for k, v in item.items())
            else:
                stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))


def job_view(job: TrainerJob) -> dict[str, Any]:
    """The document's job fields first, then what this server adds."""
    view: dict[str, Any] = {
        "job_id": job.job_id,
        "status": job.status,
        "devices": len(job.devices),
        "model_config": job.model_config,
        "dataset_config": job.dataset_config,
        "allocation": job.allocation,
        "device_list": [{"device_id": d.device_id, "ip": d.ip, "port": d.port,
                         "score_tflops": d.score} for d in job.devices],
        "progress": job.progress,
        "error": job.error,
        "run_id": job.run_id,
    }
    return view


def _guard(fn):
    """Translate TrainerError into the document's error body; anything else is a 500 with a
    message (and a log line), never a bare traceback."""
    import functools

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except TrainerError as exc:
            return _error(exc)
        except Exception as exc:
            log.exception("distributed-trainer API failure")
            return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"},
                                status_code=500)

    return wrapper


@router.post("/jobs", dependencies=_needs("train"))
@_guard
async def create_job(request: Request) -> Response:
    """Create a training job from ``model_config.layer_sizes`` and ``dataset_config``."""
    job = await run_in_threadpool(_trainer(request).create_job, await _body(request))
    return JSONResponse({"message": "Job created successfully", "job_id": job.job_id})


ACTIVE_STATES = frozenset({"created", "initialized", "training"})


@router.get("/jobs", dependencies=_needs("read"))
@_guard
async def list_jobs(request: Request, finished: bool = False) -> Response:
    """The active jobs (created, initialized, training), oldest first, as the document says
    ("Retrieves all active jobs"); ``?finished=true`` lists completed and failed ones too."""
    jobs = await run_in_threadpool(_trainer(request).jobs.list_jobs)
    return JSONResponse({"jobs": [job_view(j) for j in jobs
                                  if finished or j.status in ACTIVE_STATES]})


@router.get("/jobs/{job_id}", dependencies=_needs("read"))
@_guard
async def get_job(job_id: str, request: Request) -> Response:
    """One job: status, device count, allocation and training progress.

    ``progress.devices`` holds each device's forward/backward/total TFLOPS (its FLOPs over its
    own compute time); the job's figures in ``progress.metrics`` (and in the run's epoch
    metrics) are their **sum**, so they always agree; ``wall_tflops`` is the job's FLOPs over
    the epoch's wall time."""
    return JSONResponse(job_view(await run_in_threadpool(_trainer(request).get_job, job_id)))


@router.post("/devices/register", dependencies=_needs("admin"))
@_guard
async def register_device(request: Request) -> Response:
    """Register a ``workbench worker`` (ip, port) with a job; 409 if already registered."""
    device_id = await run_in_threadpool(_trainer(request).register_device, await _body(request))
    return JSONResponse({"message": "Device registered successfully", "device_id": device_id})


@router.delete("/devices/{port}", dependencies=_needs("admin"))
@_guard
async def unregister_device(port: str, request: Request) -> Response:
    """Unregister the device(s) on ``port``."""
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TrainerError(400, f"port: expected a number from 1 to 65535, got {port!r}")
    await run_in_threadpool(_trainer(request).unregister_device, int(port))
    return JSONResponse({"message": "Device unregistered successfully"})


@router.post("/network/initialize/{job_id}", dependencies=_needs("train"))
@_guard
async def initialize_network(job_id: str, request: Request) -> Response:
    """Measure the job's devices and allocate consecutive layers to them by FLOPs."""
    await run_in_threadpool(_trainer(request).initialize, job_id)
    return JSONResponse({"message": "Network initialized successfully"})


@router.post("/network/train/{job_id}", dependencies=_needs("train"))
@_guard
async def train_network(
    job_id: str, request: Request,
    key: Annotated[ApiKeyRecord | None, Depends(requires("train", family="trainer"))],
) -> Response:
    """Start pipeline-parallel training across the job's devices (returns at once)."""
    body = await _body(request, optional=True)
    req = await run_in_threadpool(_trainer(request).train, job_id, body)
    run_id = (await run_in_threadpool(_trainer(request).get_job, job_id)).run_id
    if run_id:  # who may cancel the session's run (POST /api/runs/<run_id>/cancel)
        await run_in_threadpool(record_run_owner, request.app.state.service, run_id, key,
                                via="trainer.train")
    return JSONResponse({"message": "Training started", "epochs": req.epochs,
                         "learning_rate": req.learning_rate})


@router.get("/previous_teraflops", dependencies=_needs("read"))
@_guard
async def previous_teraflops(request: Request) -> Response:
    """Per-device forward/backward/total TFLOPS of every finished training session."""
    return JSONResponse(await run_in_threadpool(_trainer(request).previous_teraflops))
