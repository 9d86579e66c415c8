"""The distributed-trainer service: jobs, registered devices, layer allocation, pipeline
training over ``workbench worker`` processes, and the TFLOPS history.

This is what ``/api`` (``workbench/api/routes/trainer.py``) calls. Errors are
:class:`TrainerError` with the status code the trainer API documents (400, 404, 409, 500).

A training session is also an ordinary run of the workbench (model + run in the store, target
``distributed``): its events go through ``Workbench.record_event``, so progress, per-device
TFLOPS and the allocation reach the store, the websocket and the app like any other run.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .. import events as ev
from ..outbound import OutboundRefused, check_host, is_host
from ..spec import Architecture, SubmitError, check_model_limits, error_messages
from ..store.jobs import DeviceAlreadyRegistered, TrainerJob, TrainerJobs
from .allocation import allocate
from .coordinator import JobFailed, run_job
from .job import DistJob
from .launch import Rendezvous
from .worker import RemoteRank, WorkerUnreachable, worker_health

log = logging.getLogger(__name__)

DEFAULT_MICRO_BATCHES = 4


class TrainerError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = headers


# The service's SubmitError fields, in this API's vocabulary.
_SUBMIT_FIELDS = {
    "architecture": "model_config.layer_sizes",
    "hyperparams.batch_size": "dataset_config.batch_size",
    "dataset": "model_config.layer_sizes",
}


def _refused(exc: Exception) -> TrainerError:
    """A service refusal (``SubmitError`` 400 naming this API's field; ``QueueFull`` 503 with
    Retry-After) as this API's error."""
    from ..service.errors import QueueFull

    if isinstance(exc, QueueFull):
        return TrainerError(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
    assert isinstance(exc, SubmitError)
    return TrainerError(400, f"{_SUBMIT_FIELDS.get(exc.field, exc.field)}: {exc.message}")


# ---- request bodies (the document's fields; unknown extras are ignored, as Flask would) ---------
class ModelConfig(BaseModel):
    layer_sizes: list[Annotated[int, Field(strict=True)]] = Field(min_length=2, max_length=64)


class Normalize(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    mean: list[Annotated[float, Field(strict=True)]] = Field(min_length=1, max_length=1)
    std: list[Annotated[float, Field(strict=True, gt=0.0)]] = Field(min_length=1, max_length=1)


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = "MNIST"
    batch_size: int = Field(default=256, ge=1, le=65536, strict=True)
    val_batch_size: int = Field(default=1000, ge=1, le=65536, strict=True)
    normalize: Normalize | None = None


class JobCreate(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_config_: ModelConfig = Field(alias="model_config")
    dataset_config: DatasetConfig


class DeviceRegister(BaseModel):
    ip: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535, strict=True)
    job_id: StrictStr | StrictInt

    @field_validator("ip")
    @classmethod
    def _ip_is_a_host(cls, ip: str) -> str:
        if not is_host(ip):
            raise PydanticCustomError(
                "host", "must be an IP address or a host name, got {ip}", {"ip": repr(ip[:80])})
        return ip


class TrainRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    epochs: int = Field(default=10, ge=1, le=1000, strict=True)
    learning_rate: float = Field(default=0.1, gt=0, le=10, strict=True)


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate a request body; a 400 naming each bad field otherwise."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise TrainerError(400, "; ".join(error_messages(exc))) from None


# ---- the service ----------------------------------------------------------------------------------
class TrainerService:
    def __init__(self, service: Any, *, micro_batches: int = DEFAULT_MICRO_BATCHES,
                 timeout_s: float = 30.0):
        self.service = service  # workbench.service.Workbench
        self.jobs = TrainerJobs(service.store)
        self.micro_batches, self.timeout_s = micro_batches, timeout_s
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._rendezvous: Rendezvous | None = None
        self.jobs.fail_unfinished("the server stopped while this job was training")

    def rendezvous(self) -> Rendezvous:
        """One TCPStore for every job of this server (jobs use their own key prefix)."""
        with self._lock:
            if self._rendezvous is None:
                self._rendezvous = Rendezvous(timeout_s=self.timeout_s)
            return self._rendezvous

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, body: Any) -> TrainerJob:
        req: JobCreate = parse(JobCreate, body)
        sizes = req.model_config_.layer_sizes
        try:
            arch = Architecture.from_layer_sizes(sizes)
        except (ValidationError, ValueError) as exc:
            raise TrainerError(400, "model_config.layer_sizes: " + "; ".join(error_messages(exc))) from None
        self._dataset(req.dataset_config, sizes)
        ds = req.dataset_config
        try:  # the limits every API shares (settings.limits), before the job is stored
            check_model_limits(arch, batch_size=ds.batch_size)
            check_model_limits(arch, batch_size=ds.val_batch_size, training=False,
                               batch_field="dataset_config.val_batch_size")
        except SubmitError as exc:
            raise _refused(exc) from None
        return self.jobs.create_job(model_config=req.model_config_.model_dump(),
                                    dataset_config=req.dataset_config.model_dump(exclude_none=True))

    @staticmethod
    def _dataset(config: DatasetConfig, sizes: list[int]) -> str:
        from ..data import canonical_name

        try:
            name = canonical_name(config.name)
        except ValueError as exc:
            raise TrainerError(400, f"dataset_config.name: {exc}") from None
        if sizes[0] != 784 or sizes[-1] != 10:
            raise TrainerError(400, f"model_config.layer_sizes: {config.name} needs 784 inputs and "
                               f"10 outputs, got {sizes[0]} and {sizes[-1]}")
        return name

    def get_job(self, job_id: str) -> TrainerJob:
        job = self.jobs.get_job(job_id=job_id)
        if job is None:
            raise TrainerError(404, f"Job {job_id} not found")
        return job

    # -- devices ----------------------------------------------------------------------------
    def register_device(self, body: Any) -> int:
        try:
            req: DeviceRegister = DeviceRegister.model_validate(body)
        except ValidationError as exc:
            # A bad ip is 422 naming it; the other fields keep the document's 400.
            status = 422 if all(e["loc"][:1] == ("ip",) for e in exc.errors()) else 400
            raise TrainerError(status, "; ".join(error_messages(exc))) from None
        try:
            check_host(req.ip, what="ip")
        except OutboundRefused as exc:
            raise TrainerError(422, str(exc)) from None
        job = self.get_job(str(req.job_id))
        if job.status == "training":
            raise TrainerError(409, f"job {job.job_id} is training; register devices before")
        try:
            device = self.jobs.register_device(job_id=job.job_id, ip=req.ip, port=req.port)
        except DeviceAlreadyRegistered as exc:
            raise TrainerError(409, str(exc)) from None
        if job.status == "initialized":  # a new device invalidates the allocation
            self.jobs.update_job(job_id=job.job_id, status="created", allocation=None)
        return device.device_id

    def unregister_device(self, port: int) -> None:
        busy = [d for d in self.jobs.list_devices(port=port)
                if (j := self.jobs.get_job(job_id=d.job_id)) and j.status == "training"]
        if busy:
            raise TrainerError(409, f"device on port {port} is training job {busy[0].job_id}")
        gone = self.jobs.unregister_port(port=port)
        if not gone:
            raise TrainerError(404, f"No device registered on port {port}")
        for job_id in {d.job_id for d in gone}:
            job = self.jobs.get_job(job_id=job_id)
            if job and job.status == "initialized":
                self.jobs.update_job(job_id=job_id, status="created", allocation=None)

    # -- network ----------------------------------------------------------------------------
    def initialize(self, job_id: str) -> TrainerJob:
        """Measure every device (its worker's score) and allocate consecutive layers."""
        job = self.get_job(job_id)
        if job.status == "training":
            raise TrainerError(409, f"job {job_id} is training")
        if not job.devices:
            raise TrainerError(400, f"job {job_id} has no registered devices; "
                               "POST /api/devices/register first")
        scores = []
        for device in job.devices:
            try:
                health = worker_health(device.ip, device.port, timeout_s=5.0)
            except (WorkerUnreachable, RuntimeError) as exc:
                # Not echoed: refused / timeout / another service's answer read the same.
                log.info("device %s (%s:%s): %s", device.device_id, device.ip, device.port, exc)
                raise TrainerError(400, f"device {device.device_id} ({device.ip}:{device.port}) "
                                   f"is unreachable: start `workbench worker --port "
                                   f"{device.port}` there") from None
            score = float(health.get("score_tflops") or 0) or 1e-6
            self.jobs.set_device_score(device_id=device.device_id, score=score)
            scores.append(score)
        arch = Architecture.from_layer_sizes(job.model_config["layer_sizes"])
        plans = allocate(arch, scores)
        linear = [i for i, layer in enumerate(arch.layers) if layer.type == "linear"]
        allocation = []
        for plan in plans:
            first, last = linear.index(plan.linear_layers[0]), linear.index(plan.linear_layers[-1])
            device = job.devices[plan.device]
            allocation.append({**plan.to_json(), "device_id": device.device_id,
                               "ip": device.ip, "port": device.port, "score": scores[plan.device],
                               "layer_sizes": arch.layer_sizes[first : last + 2]})
        self.jobs.update_job(job_id=job_id, status="initialized", allocation=allocation,
                             error=None)
        return self.get_job(job_id)

    def train(self, job_id: str, body: Any) -> TrainRequest:
        req: TrainRequest = parse(TrainRequest, body if body is not None else {})
        with self._lock:
            job = self.get_job(job_id)
            if job.status == "training":
                raise TrainerError(409, f"job {job_id} is already training")
            if job.status not in ("initialized", "completed", "failed") or not job.allocation:
                raise TrainerError(400, f"job {job_id} is not initialized; "
                                   f"POST /api/network/initialize/{job_id} first")
            try:
                self.service.check_queue()
                run_id, dist_job, ranks = self._prepare(job, req)
            except Exception as exc:
                from ..service.errors import QueueFull

                if isinstance(exc, (SubmitError, QueueFull)):
                    raise _refused(exc) from None
                raise
            self.jobs.update_job(job_id=job_id, status="training", error=None, run_id=run_id,
                                 train_config=req.model_dump(), progress={"epoch": 0,
                                                                          "epochs": req.epochs})
            thread = threading.Thread(target=self._train, args=(job, dist_job, ranks),
                                      name=f"trainer-job-{job_id}", daemon=True)
            self._threads[job_id] = thread
        thread.start()
        return req

    def _prepare(self, job: TrainerJob, req: TrainRequest) -> tuple[str, DistJob, list[RemoteRank]]:
        from ..train.job import RunSpec

        ds = DatasetConfig.model_validate(job.dataset_config)
        sizes = job.model_config["layer_sizes"]
        arch = Architecture.from_layer_sizes(sizes)
        hp = {"epochs": req.epochs, "batch_size": ds.batch_size,
              "optimizer": {"type": "sgd", "lr": req.learning_rate}}
        model = self.service.create_model(arch.to_json(), hp, name=f"trainer job {job.job_id}")
        run, _ = self.service.create_run(model.model_id, dataset=self._dataset(ds, sizes),
                                         target="distributed")
        assert job.allocation is not None
        names = [str(a["device_id"]) for a in job.allocation]
        ranks = [RemoteRank(a["ip"], a["port"], f"device {a['device_id']} ({a['ip']}:{a['port']})")
                 for a in job.allocation]
        normalize = (ds.normalize.mean[0], ds.normalize.std[0]) if ds.normalize else None
        from ..config import get_settings

        spec = RunSpec(run_id=run.run_id, architecture=arch.to_json(), hyperparams=hp,
                       dataset=run.dataset, device="auto", offline=get_settings().offline or None)
        plan_keys = ("stage", "device", "start", "end", "linear_layers", "forward_flops",
                     "backward_flops")
        dist_job = DistJob(
            job_id=f"trainer-{job.job_id}-{run.run_id}", strategy="pipeline",
            world_size=len(ranks), run=spec,
            plan=[{k: a[k] for k in plan_keys} for a in job.allocation],
            micro_batches=self.micro_batches, device_names=names, normalize=normalize,
            eval_batch_size=ds.val_batch_size, timeout_s=self.timeout_s,
        )
        return run.run_id, dist_job, ranks

    def _train(self, job: TrainerJob, dist_job: DistJob, ranks: list[RemoteRank]) -> None:
        epochs: list[dict[str, Any]] = []

        def sink(event: ev.Event) -> None:
            self.service.record_event(event)
            if event["type"] == ev.EPOCH:
                data = event["data"]
                epochs.append(data["devices"])
                self.jobs.update_job(job_id=job.job_id, progress={
                    "epoch": data["epoch"], "epochs": dist_job.run.hyperparams["epochs"],
                    "train_loss": data["train_loss"], "val_accuracy": data["val_accuracy"],
                    "val_loss": data["val_loss"], "devices": data["devices"]})

        try:
            host = _local_address_towards(ranks[0].host, ranks[0].port)
            done = run_job(dist_job, ranks, sink=sink, store_host=host,
                           rendezvous=self.rendezvous())
        except JobFailed as exc:
            self.jobs.update_job(job_id=job.job_id, status="failed", error=str(exc))
            return
        except Exception as exc:  # never leave a job "training" behind
            log.exception("trainer job %s crashed", job.job_id)
            self.service.record_event(ev.make_event(ev.RUN_FAILED, dist_job.run.run_id,
                                                    error=f"{type(exc).__name__}: {exc}"))
            self.jobs.update_job(job_id=job.job_id, status="failed", error=str(exc))
            return
        if epochs:
            self.jobs.record_session(job_id=job.job_id, devices=_mean_devices(epochs))
        progress = dict(self.get_job(job.job_id).progress or {})
        progress["metrics"] = {k: v for k, v in done.get("metrics", {}).items() if k != "devices"}
        self.jobs.update_job(job_id=job.job_id, status="completed", progress=progress)

    def join(self, job_id: str, timeout: float | None = None) -> bool:
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def previous_teraflops(self) -> list[dict[str, dict[str, float]]]:
        sessions = self.jobs.list_sessions()
        if not sessions:
            raise TrainerError(404, "No previous training sessions found")
        return sessions


def _mean_devices(epochs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per device, the mean over the session's epochs of forward/backward/total TFLOPS."""
    keys = ("forward_tflops", "backward_tflops", "total_tflops")
    out: dict[str, dict[str, float]] = {}
    for name in epochs[0]:
        out[name] = {k: sum(e[name][k] for e in epochs) / len(epochs) for k in keys}
    return out


def _local_address_towards(host: str, port: int) -> str:
    """The address of this machine that ``host`` can reach us on (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, port))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"
