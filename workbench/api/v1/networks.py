"""Native-spec models and exports.

- ``POST /api/v1/networks`` stores a model from the native spec (``workbench.netspec``:
  ``input_shape`` plus conv/pool/norm/dropout/... layers) or an MNIST MLP API architecture;
  train it like any model (``POST /api/models/{model_id}/train``).
- ``GET /api/v1/models/{job_id}/export?format=onnx|torchscript`` downloads a completed job's
  trained network (``workbench.export``): flat rows of ``input_size`` floats in, logits out.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...service import SubmitError
from ..deps import ServiceDep
from .conventions import ID_ERRORS, ApiError, ok, submit_error
from .jobs import trained_run
from .security import ReadKey, TrainKey
from .views import job_id as job_id_of

router = APIRouter(tags=["networks"])


class NetworkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: dict[str, Any] = Field(description="native spec (input_shape + layers) or "
                                         "MNIST MLP API architecture (input_size + layers)")
    hyperparams: dict[str, Any] | None = None
    name: str | None = Field(default=None, max_length=200)


@router.post("/networks", status_code=201, responses=ID_ERRORS)
def create_network(body: NetworkCreate, service: ServiceDep, _: TrainKey) -> Response:
    """Validate (shapes inferred layer by layer) and store a model definition."""
    from ...spec import error_messages

    try:
        model = service.create_model(body.architecture, body.hyperparams, name=body.name)
    except SubmitError as exc:
        raise submit_error(exc) from None
    except ValidationError as exc:
        lines = error_messages(exc)
        raise ApiError(422, "VALIDATION_ERROR", "architecture: " + "; ".join(lines),
                       field="architecture", details={"errors": lines}) from None
    return ok({"model_id": model.model_id, "name": model.name,
               "architecture": model.architecture, "hyperparams": model.hyperparams},
              status_code=201)


@router.get("/models/{job_id}/export", responses={
    **ID_ERRORS, 200: {"content": {"application/onnx": {}, "application/octet-stream": {}},
                       "description": "the trained network as ONNX or TorchScript"}})
def export_model(job_id: str, service: ServiceDep, _: ReadKey,
                 format: Annotated[Literal["onnx", "torchscript"], Query()] = "onnx",
                 ) -> Response:
    """A completed job's trained network as an ONNX or TorchScript file (eval mode: dropout
    off, batchnorm running statistics; a final softmax is left out, so it gives logits)."""
    from ...export import FORMATS, export

    run, record = trained_run(service, job_id)
    architecture, tensors = service.trained_network(record.param_id)
    suffix, media_type = FORMATS[format]
    name = job_id_of(run.run_id) + suffix
    return Response(export(architecture, tensors, format), media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


class NetworkTrain(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(default="mnist", max_length=64,
                         description="mnist, fashion-mnist, a bundled table or a registered name")
    hyperparams: dict[str, Any] | None = None
    limit: int | None = Field(default=None, ge=1)
    device: str = Field(default="auto", max_length=32)
    offline: bool | None = None
    cuda_graph: bool = Field(default=True, strict=True, description="false: eager steps "
                             "(CUDA only)")


@router.post("/networks/{model_id}/train", status_code=202, responses=ID_ERRORS)
def train_network(model_id: str, body: NetworkTrain, service: ServiceDep,
                  key: TrainKey) -> Response:
    """Queue a run of a stored model on any dataset of the registry (its seeded
    train/validation/test split sizes are in the run's ``run.started`` event)."""
    from ...spec import error_messages
    from ..policy import record_run_owner

    overrides: dict[str, Any] = {"offline": body.offline} if body.offline is not None else {}
    if not body.cuda_graph:
        overrides["cuda_graph"] = False
    try:
        run = service.start_run(model_id, hyperparams=body.hyperparams, dataset=body.dataset,
                                device=body.device, limit=body.limit,
                                spec_overrides=overrides or None)
    except SubmitError as exc:
        raise submit_error(exc) from None
    except ValidationError as exc:
        raise ApiError(422, "VALIDATION_ERROR", "; ".join(error_messages(exc)),
                       field="hyperparams") from None
    record_run_owner(service, run.run_id, key, via="api.v1.networks.train")
    return ok({"run_id": run.run_id, "model_id": run.model_id, "dataset": body.dataset,
               "status": run.state}, status_code=202)
