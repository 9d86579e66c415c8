"""The distributed-trainer API at ``/api`` (``shared/seeds/distributed-trainer-api.md``), with
exactly its shapes: bare JSON bodies, ``{"error": "..."}`` errors, status 400/404/409/500.

    POST   /api/jobs                          create a job (model_config, dataset_config)
    GET    /api/jobs                          {"jobs": [...]}
    GET    /api/jobs/<job_id>                 one job (status, device count, allocation)
    POST   /api/devices/register              {"ip", "port", "job_id"} -> device_id; 409 if taken
    DELETE /api/devices/<port>
    POST   /api/network/initialize/<job_id>   allocate layers to the job's devices
    POST   /api/network/train/<job_id>        {"epochs", "learning_rate"}: pipeline training
    GET    /api/previous_teraflops            per-device TFLOPS of every past session

Authentication: like the MNIST MLP API, ``Authorization: Bearer <key>``; except that a server
started with ``workbench serve --trainer-open`` (``app.state.trainer_open``) lets requests from
loopback addresses (127.0.0.0/8, ::1) in without a token, so the document's curl examples work
verbatim on the machine itself. Errors of this dependency keep this API's ``{"error"}`` shape.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from ...distributed.trainer import TrainerError, TrainerService
from ...store.jobs import TrainerJob
from ..deps import get_keyring

log = logging.getLogger(__name__)


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_trainer_access(request: Request) -> None:
    """Bearer key, or nothing at all from loopback when the server was started open."""
    if getattr(request.app.state, "trainer_open", False) and _is_loopback(
        request.client.host if request.client else None
    ):
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _Refused(401, "missing bearer token (Authorization: Bearer <key>)")
    if get_keyring(request).verify(token.strip()) is None:
        raise _Refused(401, "invalid, revoked or expired API key")


router = APIRouter(tags=["distributed trainer"], dependencies=[Depends(require_trainer_access)])


def install(app: Any) -> None:
    """The ``{"error"}`` shape for refusals of :func:`require_trainer_access`."""

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> Response:
        return JSONResponse({"error": exc.message}, status_code=exc.status,
                            headers={"WWW-Authenticate": "Bearer"})


def _trainer(request: Request) -> TrainerService:
    state = request.app.state
    if getattr(state, "trainer", None) is None:
        state.trainer = TrainerService(state.service)
    return state.trainer


def _error(exc: TrainerError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _body(request: Request, *, optional: bool = False) -> Any:
    raw = await request.body()
    if not raw.strip():
        if optional:
            return None
        raise TrainerError(400, "the request body must be JSON")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise TrainerError(400, f"the request body is not valid JSON: {exc}") from None


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


@router.post("/jobs")
@_guard
async def create_job(request: Request) -> Response:
    """Create a training job from ``model_config.layer_sizes`` and ``dataset_config``."""
    job = _trainer(request).create_job(await _body(request))
    return JSONResponse({"message": "Job created successfully", "job_id": job.job_id})


@router.get("/jobs")
@_guard
async def list_jobs(request: Request) -> Response:
    """Every job, oldest first."""
    return JSONResponse({"jobs": [job_view(j) for j in _trainer(request).jobs.list_jobs()]})


@router.get("/jobs/{job_id}")
@_guard
async def get_job(job_id: str, request: Request) -> Response:
    """One job: status, device count, allocation and training progress."""
    return JSONResponse(job_view(_trainer(request).get_job(job_id)))


@router.post("/devices/register")
@_guard
async def register_device(request: Request) -> Response:
    """Register a ``workbench worker`` (ip, port) with a job; 409 if already registered."""
    device_id = _trainer(request).register_device(await _body(request))
    return JSONResponse({"message": "Device registered successfully", "device_id": device_id})


@router.delete("/devices/{port}")
@_guard
async def unregister_device(port: str, request: Request) -> Response:
    """Unregister the device(s) on ``port``."""
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise TrainerError(400, f"port: expected a number from 1 to 65535, got {port!r}")
    _trainer(request).unregister_device(int(port))
    return JSONResponse({"message": "Device unregistered successfully"})


@router.post("/network/initialize/{job_id}")
@_guard
async def initialize_network(job_id: str, request: Request) -> Response:
    """Measure the job's devices and allocate consecutive layers to them by FLOPs."""
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(_trainer(request).initialize, job_id)
    return JSONResponse({"message": "Network initialized successfully"})


@router.post("/network/train/{job_id}")
@_guard
async def train_network(job_id: str, request: Request) -> Response:
    """Start pipeline-parallel training across the job's devices (returns at once)."""
    body = await _body(request, optional=True)
    req = _trainer(request).train(job_id, body)
    return JSONResponse({"message": "Training started", "epochs": req.epochs,
                         "learning_rate": req.learning_rate})


@router.get("/previous_teraflops")
@_guard
async def previous_teraflops(request: Request) -> Response:
    """Per-device forward/backward/total TFLOPS of every finished training session."""
    return JSONResponse(_trainer(request).previous_teraflops())
