"""Models (neurogrid's list) and Cortex model management: deploy a trained job, fine-tune it.

- ``GET /api/v1/models`` lists the stored models in the neurogrid document's shape
  (``data.models[]`` with ``type``, ``category``, ``parameters``, ``pricing``), filtered by
  ``type`` (every workbench model reads images: ``image``) and ``category``
  (``classification``); conventions' paging, sort and fields apply.

- ``POST /api/v1/models/{job_id}/deploy`` makes a deployment in this server honouring
  ``serving_config`` (micro-batching, concurrency cap: see ``batching.py``); its
  ``endpoints.inference`` (``POST /api/v1/deployments/{id}/predict``) answers like
  ``/api/infer`` and ``endpoints.metrics`` reports request counts and latencies. Deploy answers
  ``status: "deploying"`` and loads the weights on a thread (then ``ready``); deployments are
  kept in the store and loaded again when the server restarts.
- ``POST /api/v1/models/{job_id}/finetune`` queues a new job of the same model starting from
  the trained weights, with ``freeze_layers`` (``layer1``.. over the linear layers) fixed and the
  data from ``dataset_url`` (file:// or http(s):// IDX or .npz, see ``workbench.data.urls``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...model import linear_layer_names
from ...service import QueueFull, SubmitError, Workbench
from ...service.inference import check_inputs, forward
from ...spec import validate_architecture, validate_network
from ...store.deployments import DeploymentRecord, Deployments
from ..deps import ServiceDep
from ..schemas import MAX_BATCH, Inputs, ReturnSpec
from .batching import MicroBatcher, Overloaded
from .conventions import (
    CONFLICT,
    ID_ERRORS,
    RATE_LIMIT_EXCEEDED,
    ApiError,
    Envelope,
    not_found,
    ok,
    queue_full,
    submit_error,
    validation_error,
)
from .jobs import JOB_STATUS, trained_run
from .query import ListQueryDep, ListSpec, equals, paginate
from .security import ReadKey, TrainKey
from .views import base_url, finetune_id, iso, job_id, record_owner

router = APIRouter(tags=["models"])
log = logging.getLogger(__name__)


# ---- bodies ------------------------------------------------------------------------------------
class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_nodes: int = Field(default=1, ge=1, le=64, strict=True)
    max_nodes: int = Field(default=1, ge=1, le=64, strict=True)
    gpu_required: bool = Field(default=False, strict=True)
    memory_request: str | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)?$",
                                       max_length=32)

    @model_validator(mode="after")
    def _nodes(self) -> DeploymentConfig:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes ({self.min_nodes}) exceeds max_nodes ({self.max_nodes})")
        return self


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    batch_size: int = Field(default=32, ge=1, le=MAX_BATCH, strict=True,
                            description="samples per micro-batch")
    timeout_ms: float = Field(default=100, ge=0, le=10_000, strict=True,
                              description="longest wait for a micro-batch to fill")
    max_concurrent_requests: int = Field(default=100, ge=1, le=10_000, strict=True,
                                         description="in flight at once; 429 beyond")


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    deployment_config: DeploymentConfig = Field(default_factory=DeploymentConfig)
    serving_config: ServingConfig = Field(default_factory=ServingConfig)


class DeploymentPublic(BaseModel):
    deployment_id: str
    status: str
    job_id: str
    param_id: str
    endpoints: dict[str, str]
    deployment_config: DeploymentConfig
    serving_config: ServingConfig
    created_at: str
    error: str | None = None  # why a failed deployment could not load its weights


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    inputs: Inputs = Field(min_length=1, max_length=MAX_BATCH,
                           description=f"1..{MAX_BATCH} inputs of input_size floats each")
    return_: ReturnSpec = Field(default_factory=ReturnSpec, alias="return")


class FineTuningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    learning_rate: float = Field(default=1e-4, gt=0.0, le=10.0, strict=True)
    epochs: int = Field(default=1, ge=1, le=1000, strict=True)
    batch_size: int | None = Field(default=None, ge=1, le=65536, strict=True)
    freeze_layers: list[str] = Field(default_factory=list, max_length=5,
                                     description="layer1, layer2, ... (linear layers, 1-based)")


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset_url: str | None = Field(default=None, max_length=2000, description=(
        "file:// URL under the server's data roots (WORKBENCH_DATA_ROOTS) or http(s):// URL on "
        "an allowed host (WORKBENCH_ALLOWED_HOSTS) of an .npz (x_train, y_train) or of a "
        "directory holding MNIST-named IDX files; without it, `dataset` is used"))
    validation_split: float = Field(default=0.2, ge=0.0, lt=1.0, strict=True)
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    limit: int | None = Field(default=None, ge=1, le=10_000_000, strict=True)


class FinetuneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    fine_tuning_config: FineTuningConfig = Field(default_factory=FineTuningConfig)
    dataset_config: DatasetConfig = Field(default_factory=DatasetConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class FinetuneAccepted(BaseModel):
    finetune_job_id: str
    status: str
    original_job_id: str
    task_id: str


# ---- the model list (neurogrid) -----------------------------------------------------------------
MODEL_TYPES = ("text", "image", "audio")  # the document's types; MNIST-class MLPs are "image"


def _size(params: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= scale:
            return f"{params / scale:.3g}{unit}"
    return str(params)


def model_view(model: Any) -> dict[str, Any]:
    """A stored model as the neurogrid list shows one; pricing is the compute price per hour
    (``WORKBENCH_COMPUTE_PRICE_PER_HOUR``) that task costs are computed from."""
    from ...config import get_settings
    from ...model import model_cost

    arch = validate_architecture(model.architecture, allow_dropout=True)
    cost = model_cost(arch)
    widths = [arch.input_size] + [layer.out for layer in arch.layers if layer.type == "linear"]
    return {
        "id": model.model_id, "name": model.name or model.model_id, "type": "image",
        "category": "classification",
        "description": f"MLP classifier {'-'.join(map(str, widths))} "
                       f"({cost.params:,} parameters)",
        "parameters": {"size": _size(cost.params), "count": cost.params,
                       "input_size": arch.input_size, "classes": widths[-1],
                       "forward_flops_per_sample": cost.forward_flops},
        "pricing": {"per_compute_hour": get_settings().compute_price_per_hour,
                    "currency": "USD"},
        "created_at": iso(model.created_at),
    }


MODEL_SPEC = ListSpec(
    fields=("id", "name", "type", "category", "description", "parameters", "pricing",
            "created_at"),
    sortable=("created_at", "name", "id"),
    filters={"type": equals("type", allowed=MODEL_TYPES), "category": equals("category")},
)


class ModelList(BaseModel):
    models: list[dict[str, Any]]


@router.get("/models", response_model=Envelope[ModelList], responses=ID_ERRORS)
def list_models(service: ServiceDep, query: ListQueryDep, _: ReadKey,
                type: Annotated[Literal["text", "image", "audio"] | None,
                                Query(description="text, image or audio")] = None,
                category: Annotated[str | None, Query(max_length=100, description=
                                                      "classification, ...")] = None) -> Response:
    """Stored models, newest first: ``data.models[]``; ``type`` and ``category`` filter."""
    views = [model_view(m) for m in service.list_models(limit=100_000)]
    page, meta = paginate(views, query, MODEL_SPEC)
    return ok({"models": page}, meta=meta)


# ---- deployments -------------------------------------------------------------------------------
_LOAD_WAIT_S = 60.0  # a predict that arrives while its deployment loads waits this long


class Deployment:
    """One served job. Its record is in the store (``workbench.store.deployments``); loading
    the weights happens on a thread: ``status`` is ``deploying`` until they are in memory, then
    ``ready`` (or ``failed``, with ``error``)."""

    def __init__(self, service: Workbench, record: DeploymentRecord):
        self.service = service
        self.record = record
        self.deployment_id = record.deployment_id
        self.job_id = record.job_id
        self.param_id = record.param_id
        self.body = DeployRequest.model_validate(record.config)
        self.loaded: Any = None
        self.error: str | None = None
        self.done = threading.Event()
        serving = self.body.serving_config
        self.batcher = MicroBatcher(self._forward, batch_size=serving.batch_size,
                                    timeout_ms=serving.timeout_ms,
                                    max_concurrent=serving.max_concurrent_requests)

    def start(self) -> Deployment:
        threading.Thread(target=self._load, name=f"load-{self.deployment_id}",
                         daemon=True).start()
        return self

    def _load(self) -> None:
        try:
            self.loaded = self.service.loaded_model(self.param_id)
        except Exception as exc:  # the weights are gone or unreadable: say so on GET
            log.warning("deployment %s could not load %s: %s", self.deployment_id,
                        self.param_id, exc)
            self.error = f"could not load the weights {self.param_id}: {type(exc).__name__}"
        finally:
            self.done.set()

    @property
    def status(self) -> str:
        if not self.done.is_set():
            return "deploying"
        return "failed" if self.loaded is None else "ready"

    def _forward(self, x: np.ndarray) -> dict[str, list]:
        return forward(self.loaded, x, logits=True, probabilities=True, labels=True)["outputs"]

    def endpoints(self, base: str) -> dict[str, str]:
        root = f"{base}/api/v1/deployments/{self.deployment_id}"
        return {"inference": f"{root}/predict", "metrics": f"{root}/metrics"}

    def view(self, base: str) -> dict[str, Any]:
        view = {
            "deployment_id": self.deployment_id, "status": self.status, "job_id": self.job_id,
            "param_id": self.param_id, "endpoints": self.endpoints(base),
            "deployment_config": self.body.deployment_config.model_dump(),
            "serving_config": self.body.serving_config.model_dump(),
            "created_at": iso(self.record.created_at),
        }
        if self.error:
            view["error"] = self.error
        return view


class DeploymentRegistry:
    """The deployments of this server: persisted, and loaded again after a restart."""

    def __init__(self, service: Workbench):
        self.service = service
        self.store = Deployments(service.store)
        self._lock = threading.Lock()
        self._live: dict[str, Deployment] = {
            r.deployment_id: Deployment(service, r).start() for r in self.store.active()}

    def create(self, *, job_id: str, param_id: str, body: DeployRequest) -> Deployment:
        record = self.store.create(job_id=job_id, param_id=param_id,
                                   config=body.model_dump(mode="json"))
        deployment = Deployment(self.service, record)
        with self._lock:
            self._live[record.deployment_id] = deployment
        return deployment.start()

    def get(self, deployment_id: str) -> Deployment | None:
        with self._lock:
            return self._live.get(deployment_id)

    def values(self) -> list[Deployment]:
        with self._lock:
            return list(self._live.values())

    def delete(self, deployment_id: str) -> Deployment | None:
        with self._lock:
            deployment = self._live.pop(deployment_id, None)
        self.store.delete(deployment_id=deployment_id)
        return deployment


def _deployments(request: Request) -> DeploymentRegistry:
    return request.app.state.v1_deployments


def _deployment(request: Request, deployment_id: str) -> Deployment:
    found = _deployments(request).get(deployment_id)
    if found is None:
        raise not_found("deployment", deployment_id, "deployment_id")
    return found


@router.post("/models/{job_id}/deploy", status_code=201, response_model=Envelope[DeploymentPublic],
             responses=ID_ERRORS)
def deploy(job_id: str, body: DeployRequest, request: Request, service: ServiceDep,
           _: TrainKey) -> Response:
    """Serve a completed job's weights with micro-batching and a concurrency cap. Answers
    ``status: "deploying"``; ``GET /deployments/{id}`` says ``ready`` once the weights are
    loaded (a predict meanwhile waits for them). Deployments survive a restart."""
    if body.deployment_config.gpu_required:
        import torch

        if not torch.cuda.is_available():
            raise validation_error("deployment_config.gpu_required",
                                   "this server has no GPU; deploy with gpu_required false")
    run, record = trained_run(service, job_id)
    deployment = _deployments(request).create(job_id=job_id_of(run.run_id),
                                              param_id=record.param_id, body=body)
    return ok({**deployment.view(base_url(request)), "status": "deploying"}, status_code=201)


job_id_of = job_id  # route parameters named job_id shadow the helper inside handlers


DEPLOYMENT_SPEC = ListSpec(
    fields=tuple(DeploymentPublic.model_fields), sortable=("created_at", "job_id", "deployment_id"),
    filters={"job_id": lambda v: (lambda item: item["job_id"] == v)},
)


@router.get("/deployments", response_model=Envelope[list[DeploymentPublic]], responses=ID_ERRORS)
def list_deployments(request: Request, query: ListQueryDep, _: ReadKey,
                     job_id: str | None = None) -> Response:
    """Deployments in this server."""
    base = base_url(request)
    page, meta = paginate([d.view(base) for d in _deployments(request).values()], query,
                          DEPLOYMENT_SPEC)
    return ok(page, meta=meta)


@router.get("/deployments/{deployment_id}", response_model=Envelope[DeploymentPublic],
            responses=ID_ERRORS)
def get_deployment(deployment_id: str, request: Request, _: ReadKey) -> Response:
    """One deployment."""
    return ok(_deployment(request, deployment_id).view(base_url(request)))


@router.delete("/deployments/{deployment_id}", response_model=Envelope[DeploymentPublic],
               responses=ID_ERRORS)
async def delete_deployment(deployment_id: str, request: Request, _: TrainKey) -> Response:
    """Stop serving a deployment."""
    deployment = _deployment(request, deployment_id)
    _deployments(request).delete(deployment_id)
    await deployment.batcher.close()
    return ok({**deployment.view(base_url(request)), "status": "deleted"})


@router.post("/deployments/{deployment_id}/predict", responses=ID_ERRORS)
async def predict(deployment_id: str, body: PredictRequest, request: Request,
                  _: ReadKey) -> Response:
    """Predictions, as ``/api/infer`` gives them; 429 past ``max_concurrent_requests``."""
    deployment = _deployment(request, deployment_id)
    if not deployment.done.is_set():
        await asyncio.to_thread(deployment.done.wait, _LOAD_WAIT_S)
    if deployment.loaded is None:
        raise ApiError(409, CONFLICT, f"deployment {deployment_id} is {deployment.status}"
                       + (f": {deployment.error}" if deployment.error else ""),
                       field="deployment_id", details={"status": deployment.status})
    x = check_inputs(body.inputs, deployment.loaded.architecture.input_size)
    started = time.perf_counter()
    try:
        outputs, batch_samples = await deployment.batcher.submit(x)
    except Overloaded:
        limit = deployment.batcher.max_concurrent
        raise ApiError(429, RATE_LIMIT_EXCEEDED, f"deployment {deployment_id} already has "
                       f"{limit} requests in flight (max_concurrent_requests)",
                       details={"max_concurrent_requests": limit},
                       headers={"Retry-After": "1"}) from None
    wanted = body.return_
    picked = {k: v for k, v in outputs.items()
              if (k == "labels" and wanted.labels) or (k == "probabilities" and wanted.probabilities)
              or (k == "logits" and wanted.logits)}
    return ok({"model_id": deployment.loaded.model_id, "param_id": deployment.param_id,
               "outputs": picked, "latency_ms": (time.perf_counter() - started) * 1000.0},
              meta={"deployment_id": deployment_id, "batch_samples": batch_samples})


@router.get("/deployments/{deployment_id}/metrics", responses=ID_ERRORS)
def deployment_metrics(deployment_id: str, request: Request, _: ReadKey) -> Response:
    """Request counts, batches and latency percentiles of a deployment."""
    deployment = _deployment(request, deployment_id)
    return ok({"deployment_id": deployment_id,
               **deployment.batcher.stats.view(deployment.batcher.in_flight)})


# ---- fine-tuning -------------------------------------------------------------------------------
# The service's SubmitError fields, in the fine-tune request's vocabulary.
FINETUNE_FIELDS = {
    "data_url": "dataset_config.dataset_url",
    "dataset": "dataset_config.dataset",
    "hyperparams.batch_size": "fine_tuning_config.batch_size",
}


@router.post("/models/{job_id}/finetune", status_code=202, response_model=Envelope[FinetuneAccepted],
             responses=ID_ERRORS)
def finetune(job_id: str, body: FinetuneRequest, service: ServiceDep, key: TrainKey) -> Response:
    """A new job starting from the trained weights, with frozen layers and new data."""
    run, _ = trained_run(service, job_id)
    model = service.get_model(run.model_id)
    # an MLP or a native-spec network (CNN: its conv2d and linear layers are named)
    arch = validate_network(model.architecture, allow_dropout=True, num_classes=None)
    names = linear_layer_names(arch)
    cfg = body.fine_tuning_config
    freeze = []
    for i, name in enumerate(cfg.freeze_layers):
        if name not in names:
            raise validation_error(f"fine_tuning_config.freeze_layers[{i}]",
                                   f"unknown layer {name!r}; this model has {', '.join(names)}")
        freeze.append(names[name])
    if len(set(freeze)) == len(names):
        raise validation_error("fine_tuning_config.freeze_layers",
                               "every layer is frozen; leave at least one trainable")
    data = body.dataset_config
    override: dict[str, Any] = {
        "epochs": cfg.epochs, "max_epochs": cfg.epochs, "early_stopping_patience": None,
        "optimizer": {"type": "adam", "lr": cfg.learning_rate},
        "train_split": 1.0 - data.validation_split,
    }
    if cfg.batch_size is not None:
        override["batch_size"] = cfg.batch_size
    try:  # the data is checked now (allowed, readable, the model's width): nothing stored else
        new = service.start_run(
            model.model_id, hyperparams=override, dataset=data.dataset, device=body.device,
            limit=data.limit, spec_overrides={
                "allow_dropout": True, "freeze": sorted(set(freeze)),
                "data_url": data.dataset_url},
            initial_param_id=run.param_id,
        )
    except SubmitError as exc:
        raise submit_error(exc, FINETUNE_FIELDS) from None
    except QueueFull as exc:
        raise queue_full(exc) from None
    record_owner(service, new.run_id, key.key_id, "models.finetune")
    return ok({"finetune_job_id": finetune_id(new.run_id), "status": JOB_STATUS[new.state],
               "original_job_id": job_id_of(run.run_id), "task_id": new.run_id},
              status_code=202)
