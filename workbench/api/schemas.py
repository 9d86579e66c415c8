"""Request and response bodies of the MNIST MLP API (``shared/seeds/mnist-mlp-api.md``).

The architecture, hyperparameter and parameter shapes are the ones in ``workbench.spec``; this
module only adds the envelopes around them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StringConstraints

from ..spec import Architecture, Hyperparams, Parameters
from ..store.experiments import MAX_DESCRIPTION_CHARS
from ..store.runs import clean_name, clean_tag

MAX_BATCH = 512  # inputs per /infer request (the API's documented limit)

# A run's (or experiment's) name and a tag. The constraints document the shape in OpenAPI; the
# store's own checks then run too, because pydantic's idea of whitespace (Unicode White_Space)
# is not Python's (which adds U+001C-U+001F): a tag with U+001C passed here and was a 500 there.
RunName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                    AfterValidator(lambda v: clean_name(v, field="value"))]
RunTag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                          pattern=r"^[^,\x00-\x1f\x7f-\x9f]+$"),
                   AfterValidator(lambda v: clean_tag(v, field="value"))]


# An experiment's bodies (``/api/experiments`` and ``/api/v1/experiments``).
class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RunName
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)


class ExperimentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(max_length=MAX_DESCRIPTION_CHARS)


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong")
    errors: list[str] = Field(default_factory=list, description="one line per offending field")


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: Architecture
    hyperparams: Hyperparams | None = None
    name: str | None = Field(default=None, max_length=200)


class ModelPublic(BaseModel):
    model_id: str
    name: str
    architecture: dict[str, Any]
    hyperparams: dict[str, Any]
    created_at: str = Field(description="ISO 8601, UTC")


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    hyperparams: Hyperparams | None = Field(
        default=None, description="fields given here override the model's hyperparameters"
    )
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    limit: int | None = Field(default=None, ge=1, le=10_000_000, strict=True,
                              description="train on at most this many samples (quick runs)")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]{1,2})?)$",
                        description="auto | cpu | cuda | cuda:N")
    cuda_graph: bool = Field(default=True, strict=True,
                             description="false: eager steps (CUDA only)")
    offline: bool | None = Field(default=None, strict=True,
                                 description="true: never download; local data")
    target: str = Field(default="local", min_length=1, max_length=200,
                        description="where to train: local, local-kernel, distributed, ray or a "
                        "registered node id (GET /api/v1/nodes)")
    strategy: Literal["single", "ddp", "pipeline"] = Field(
        default="single", description="ddp / pipeline: torch.distributed ranks (target "
        "distributed)")
    world_size: int | None = Field(default=None, ge=1, le=64, strict=True,
                                   description="ranks of a ddp / pipeline run (default 2; at "
                                   "most the machine's CPU count, WORKBENCH_MAX_WORLD_SIZE)")
    name: RunName | None = Field(
        default=None, description="the run's name (default: a readable adjective-noun-NN)")
    experiment: RunName | None = Field(
        default=None, description="the experiment it belongs to (default 'default')")
    tags: list[RunTag] = Field(default_factory=list, max_length=100,
                               description="labels (no commas or line breaks)")
    checkpoint_every: int | None = Field(
        default=None, ge=0, le=100_000, strict=True,
        description="checkpoint every N epochs (0: only when paused; default "
        "WORKBENCH_CHECKPOINT_EVERY); a paused or interrupted run resumes from its last one")
    auto_resume: bool | None = Field(
        default=None, strict=True,
        description="resume automatically from the last checkpoint if the server dies "
        "mid-run (default WORKBENCH_AUTO_RESUME)")


class TrainAccepted(BaseModel):
    run_id: str
    model_id: str
    status: Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]


class RunPublic(BaseModel):
    run_id: str
    model_id: str
    state: Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]
    epoch: int
    epochs_total: int
    metrics: dict[str, float | None] = Field(
        description="latest epoch: train_loss, train_accuracy, val_loss, val_accuracy, "
        "samples_per_s, *_tflops, share_of_peak (of the device's measured matmul peak, "
        "0..1, when one is stored), mfu (of the GPU's spec-sheet dense peak for the "
        "dtype in use; known GPUs only), ..."
    )
    param_id: str | None = Field(default=None, description="only once succeeded")
    error: str | None = Field(default=None, description="why a run failed")
    dataset: str
    target: str = Field(description="where it ran: local, local-kernel, distributed, ray, "
                        "a node id")
    device: str | None = Field(default=None, description="the device it used (run.started)")
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    name: str = Field(default="", description="readable name (adjective-noun-NN by default)")
    experiment: str = Field(default="default", description="the experiment it belongs to")
    tags: list[str] = Field(default_factory=list)
    notes: str = ""


class RunPage(BaseModel):
    items: list[RunPublic]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null at end")


class RunEvent(BaseModel):
    id: int = Field(description="increasing per store; pass the last one seen as ?after=")
    type: str = Field(description="run.started, step, epoch, evaluation, run.completed, ...")
    run_id: str
    time: float = Field(description="seconds since the epoch")
    data: dict[str, Any]


class RunEvents(BaseModel):
    run_id: str
    state: Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]
    events: list[RunEvent]
    last_id: int = Field(description="the last id returned (``after`` when none)")


class ParamsPublic(BaseModel):
    param_id: str
    model_id: str
    run_id: str | None
    parameters: Parameters
    size_bytes: int = Field(description="bytes of raw float32 weights")


class ReturnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    logits: bool = False
    probabilities: bool = True
    labels: bool = True


# StrictFloat: JSON numbers only (true/false are refused, not read as 1.0/0.0).
Inputs = list[list[StrictFloat]]


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    param_id: str = Field(max_length=200)
    inputs: Inputs = Field(min_length=1, max_length=MAX_BATCH,
                           description=f"1..{MAX_BATCH} inputs of input_size floats each")
    return_: ReturnSpec = Field(default_factory=ReturnSpec, alias="return")


class InferAdhocRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    architecture: Architecture
    parameters: Parameters
    inputs: Inputs = Field(min_length=1, max_length=MAX_BATCH)
    return_: ReturnSpec = Field(default_factory=ReturnSpec, alias="return")


class InferOutputs(BaseModel):
    labels: list[int] | None = None
    probabilities: list[list[float | None]] | None = None  # null where non-finite
    logits: list[list[float | None]] | None = None


class InferResponse(BaseModel):
    model_id: str | None
    param_id: str | None
    outputs: InferOutputs
    latency_ms: float


class Health(BaseModel):
    status: Literal["ok"]
    version: str
