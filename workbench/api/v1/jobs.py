"""Cortex jobs: ``POST /api/v1/jobs/submit``, ``GET /jobs/{id}/status``, ``GET /jobs/{id}/results``
and the artifacts the results point at (``/models/{id}/weights.safetensors``, ``config.json``).

A job is a run of a model made from ``neural_model_config`` (``Architecture.from_cortex``,
dropout allowed), trained with Adam at ``training_config.learning_rate`` for up to
``max_epochs`` with early stopping. ``global_node_urls`` choose where it trains
(``workbench.executors.targets.from_node_urls``): one registered node's URL -> that node;
URLs of running ``workbench worker``s -> DDP with one rank per worker. A URL that is neither
is a VALIDATION_ERROR naming ``global_node_urls[i]`` at submit time. Without them ``target``,
``strategy`` and ``world_size`` (workbench extensions) pick the target.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ... import events as ev
from ...executors.targets import TargetError, choose, from_node_urls
from ...service import QueueFull, SubmitError, Workbench
from ...spec import Architecture, CortexModelConfig, Hyperparams
from ..deps import ServiceDep
from .conventions import (
    CONFLICT,
    ID_ERRORS,
    READ_ERRORS,
    ApiError,
    Envelope,
    ok,
    pydantic_error,
    queue_full,
    submit_error,
    validation_error,
)
from .security import ReadKey, TrainKey
from .views import JOB_STATUS, base_url, duration_s, get_run, iso, job_id, record_owner

router = APIRouter(tags=["jobs"])

JOB_SUBMITTED = "job.submitted"  # logged: {"global_node_urls": [...], "training_config": {...}}
_URL_SCHEMES = ("ws", "wss", "http", "https")


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    batch_size: int = Field(default=32, ge=1, le=65536, strict=True)
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0, strict=True)
    max_epochs: int = Field(default=10, ge=1, le=1000, strict=True)
    early_stopping_patience: int | None = Field(default=None, ge=1, le=1000, strict=True)
    validation_split: float = Field(default=0.1, ge=0.0, lt=1.0, strict=True,
                                    description="share of the training data held out")
    seed: int = Field(default=42, ge=0, le=2**63 - 1, strict=True)

    def hyperparams(self) -> dict[str, Any]:
        return Hyperparams.model_validate({
            "epochs": self.max_epochs, "max_epochs": self.max_epochs,
            "batch_size": self.batch_size, "seed": self.seed,
            "optimizer": {"type": "adam", "lr": self.learning_rate},
            "early_stopping_patience": self.early_stopping_patience,
            "train_split": 1.0 - self.validation_split,
        }).to_json()



def _node_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in _URL_SCHEMES or not parts.hostname:
        raise ValueError(f"{url!r} is not a ws://, wss://, http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return url


NodeUrl = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_node_url)]


class JobSubmit(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    neural_model_config: CortexModelConfig
    training_config: TrainingConfig = Field(default_factory=TrainingConfig)
    global_node_urls: list[NodeUrl] = Field(default_factory=list, max_length=64)
    # Workbench extensions (not in the Cortex document):
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    limit: int | None = Field(default=None, ge=1, le=10_000_000, strict=True,
                              description="train on at most this many samples (quick jobs)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    name: str | None = Field(default=None, max_length=200)
    target: str | None = Field(default=None, min_length=1, max_length=200,
                               description="local (default), local-kernel, distributed, ray or a "
                               "node "
                               "id; not together with global_node_urls")
    strategy: Literal["single", "ddp", "pipeline"] = Field(
        default="single", description="ddp / pipeline: torch.distributed ranks")
    world_size: int | None = Field(default=None, ge=1, le=64, strict=True,
                                   description="ranks of a ddp / pipeline job (default 2; at "
                                   "most the machine's CPU count, WORKBENCH_MAX_WORLD_SIZE)")


class JobAccepted(BaseModel):
    job_id: str
    status: str
    timestamp: str
    task_id: str
    model_id: str


class JobStatus(BaseModel):
    job_id: str
    status: str
    metrics: dict[str, Any]
    error: str | None
    last_updated: str


class JobResults(BaseModel):
    job_id: str
    training_duration: float
    final_metrics: dict[str, Any]
    model_artifacts: dict[str, str]
    param_id: str
    epochs_run: int


# The service's SubmitError fields, in the Cortex submit's vocabulary.
SUBMIT_FIELDS = {
    "architecture": "neural_model_config",
    "hyperparams.batch_size": "training_config.batch_size",
    "dataset": "neural_model_config.input_dim",
}


def submit_run(service: Workbench, key_id: str, *, architecture: Architecture,
               hyperparams: dict[str, Any], dataset: str, limit: int | None, device: str,
               name: str | None, via: str, log: dict[str, Any] | None = None,
               target: str = "local", spec_overrides: dict[str, Any] | None = None,
               fields: dict[str, str] | None = None) -> Any:
    """Check everything the run needs (``Workbench.check_submission``: limits, data fit,
    device, ranks, queue), then create the model, queue the run, log who asked (and ``log`` as
    ``job.submitted``). A refusal stores nothing; its field is renamed through ``fields``."""
    overrides = {"allow_dropout": True, **(spec_overrides or {})}
    try:
        service.check_submission(architecture, Hyperparams.model_validate(hyperparams),
                                 dataset=dataset, target=target, device=device,
                                 spec_overrides=overrides)
        model = service.create_model(architecture.to_json(), hyperparams, name=name,
                                     allow_dropout=True)
        run = service.start_run(model.model_id, dataset=dataset, device=device, limit=limit,
                                target=target, spec_overrides=overrides)
    except SubmitError as exc:
        raise submit_error(exc, fields) from None
    except QueueFull as exc:
        raise queue_full(exc) from None
    record_owner(service, run.run_id, key_id, via)
    if log is not None:
        service.record_event(ev.make_event(JOB_SUBMITTED, run.run_id, **log))
    return service.get_run(run.run_id)


@router.post("/jobs/submit", status_code=202, response_model=Envelope[JobAccepted],
             responses=READ_ERRORS)
def submit_job(body: JobSubmit, service: ServiceDep, key: TrainKey) -> Response:
    """Submit a training job (Cortex ``neural_model_config`` + ``training_config``)."""
    try:
        architecture = Architecture.from_cortex(body.neural_model_config)
    except ValidationError as exc:
        raise pydantic_error(exc, prefix="neural_model_config") from None
    try:
        hyperparams = body.training_config.hyperparams()
    except ValidationError as exc:
        raise pydantic_error(exc, prefix="training_config") from None
    target, overrides = _placement(service, body)
    run = submit_run(
        service, key.key_id, architecture=architecture, hyperparams=hyperparams,
        dataset=body.dataset, limit=body.limit, device=body.device, name=body.name,
        via="jobs.submit", target=target, spec_overrides=overrides, fields=SUBMIT_FIELDS,
        log={"global_node_urls": body.global_node_urls, "target": target, **overrides,
             "training_config": body.training_config.model_dump()},
    )
    return ok({"job_id": job_id(run.run_id), "status": JOB_STATUS[run.state],
               "timestamp": iso(run.created_at), "task_id": run.run_id,
               "model_id": run.model_id}, status_code=202)


def _placement(service: Workbench, body: JobSubmit) -> tuple[str, dict[str, Any]]:
    """(target, RunSpec overrides) of a job: ``global_node_urls`` when given (a registered
    node, or ``workbench worker``s for DDP), else ``target`` / ``strategy`` / ``world_size``."""
    try:
        if body.global_node_urls:
            if body.target is not None:
                raise TargetError("target", "give either target or global_node_urls, not both")
            if body.world_size is not None:
                raise TargetError("world_size", "with global_node_urls the ranks are the "
                                  "listed workers, one each")
            strategy = "ddp" if body.strategy == "single" else body.strategy
            return from_node_urls(service, body.global_node_urls, strategy=strategy)
        target, overrides = choose(body.target, strategy=body.strategy,
                                   world_size=body.world_size)
    except TargetError as exc:
        raise validation_error(exc.field, exc.message) from None
    if target not in service.targets:  # before anything is stored
        raise validation_error("target", f"unknown target {target!r}; known: "
                               f"{', '.join(service.targets)}", known=service.targets)
    return target, overrides


def job_metrics(run_metrics: dict[str, Any], epoch: int) -> dict[str, Any]:
    """Cortex names (loss, accuracy, val_*) plus everything the engine measured."""
    metrics = dict(run_metrics)
    if "train_loss" in metrics:
        metrics["loss"] = metrics["train_loss"]
    if "train_accuracy" in metrics:
        metrics["accuracy"] = metrics["train_accuracy"]
    metrics["epoch"] = epoch
    return metrics


@router.get("/jobs/{job_id}/status", response_model=Envelope[JobStatus], responses=ID_ERRORS)
def job_status(job_id: str, service: ServiceDep, _: ReadKey) -> Response:
    """Status and latest epoch metrics of a job."""
    run = get_run(service, job_id)
    return ok({"job_id": job_id_of(run.run_id), "status": JOB_STATUS[run.state],
               "metrics": job_metrics(run.metrics, run.epoch), "error": run.error,
               "last_updated": iso(run.updated_at)})


job_id_of = job_id  # the route parameter shadows the helper's name inside handlers


@router.get("/jobs/{job_id}/results", response_model=Envelope[JobResults],
            responses={**ID_ERRORS, 409: ID_ERRORS[404] | {"description": "job not completed"}})
def job_results(job_id: str, request: Request, service: ServiceDep, _: ReadKey) -> Response:
    """Duration, final metrics and artifact URLs of a completed job (409 before that)."""
    run = get_run(service, job_id)
    if run.state != "succeeded" or not run.param_id:
        raise ApiError(409, CONFLICT, f"job {job_id} is {JOB_STATUS[run.state]}, not completed",
                       field="job_id", details={"status": JOB_STATUS[run.state]})
    public = job_id_of(run.run_id)
    base = f"{base_url(request)}/api/v1/models/{public}"
    return ok({
        "job_id": public,
        "training_duration": duration_s(run) or 0.0,
        "final_metrics": job_metrics(run.metrics, run.epoch),
        "model_artifacts": {"weights_url": f"{base}/weights.safetensors",
                            "config_url": f"{base}/config.json"},
        "param_id": run.param_id,
        "epochs_run": run.epoch,
    })


def trained_run(service: Workbench, job_id: str):
    """(run, param record) of a succeeded job; 409 CONFLICT while it has no weights."""
    run = get_run(service, job_id)
    if run.state != "succeeded" or not run.param_id:
        raise ApiError(409, CONFLICT, f"job {job_id} has no trained weights (it is "
                       f"{JOB_STATUS[run.state]})", field="job_id")
    return run, service.get_param_record(run.param_id)


@router.get("/models/{job_id}/weights.safetensors", responses={
    **ID_ERRORS, 200: {"content": {"application/octet-stream": {}},
                       "description": "the trained weights (safetensors)"}})
def job_weights(job_id: str, service: ServiceDep, _: ReadKey) -> Response:
    """The trained weights as safetensors (``{i}.weight``/``{i}.bias`` per spec layer)."""
    run, record = trained_run(service, job_id)
    return Response(record.safetensors, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{job_id_of(run.run_id)}.safetensors"'})


@router.get("/models/{job_id}/config.json", responses=ID_ERRORS)
def job_config(job_id: str, service: ServiceDep, _: ReadKey) -> Response:
    """The model's architecture and training hyperparameters as plain JSON (no envelope: it
    is a file, loadable by ``workbench.spec.validate_architecture``)."""
    import orjson

    run, record = trained_run(service, job_id)
    model = service.get_model(run.model_id)
    body = {"job_id": job_id_of(run.run_id), "model_id": model.model_id,
            "param_id": record.param_id, "architecture": model.architecture,
            "hyperparams": run.hyperparams, "dataset": run.dataset, "format": "safetensors",
            "weights_sha256_of_blob": _sha256(record.safetensors)}
    return Response(orjson.dumps(body), media_type="application/json")


def _sha256(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()

