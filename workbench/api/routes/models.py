"""``/api/models``: create model definitions, start training, list a model's runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from ...executors.targets import TargetError, choose
from ..deps import ServiceDep
from ..errors import ERROR_RESPONSES, QUEUE_FULL_RESPONSE, error_response
from ..policy import TrainKey, record_run_owner, requires
from ..schemas import ModelCreate, ModelPublic, RunPage, TrainAccepted, TrainRequest
from ..views import json_response, model_view, run_view

router = APIRouter(prefix="/models", tags=["models"])


@router.post("", response_model=ModelPublic, responses=ERROR_RESPONSES,
             dependencies=[Depends(requires("train"))])
def create_model(body: ModelCreate, service: ServiceDep) -> Response:
    """Create a model definition (architecture + default hyperparameters)."""
    hp = body.hyperparams.to_json() if body.hyperparams else None
    model = service.create_model(body.architecture.to_json(), hp, name=body.name)
    return json_response(model_view(model))


@router.get("/{model_id}", response_model=ModelPublic, responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
def get_model(model_id: str, service: ServiceDep) -> Response:
    """One model definition."""
    return json_response(model_view(service.get_model(model_id)))


@router.post(
    "/{model_id}/train", status_code=202, response_model=TrainAccepted,
    responses={**ERROR_RESPONSES, **QUEUE_FULL_RESPONSE,
               409: {"model": ERROR_RESPONSES[400]["model"],
                     "description": "override inconsistent with the model's hyperparameters"}},
)
def train(model_id: str, service: ServiceDep, key: TrainKey,
          body: TrainRequest | None = None) -> Response:
    """Queue a training run; fields in ``hyperparams`` override the model's. ``target`` picks
    where it trains (422 naming the known targets otherwise); ``strategy: ddp | pipeline`` with
    ``world_size`` trains on torch.distributed ranks. Refused before anything is stored: a
    model whose ``input_size`` is not the dataset's feature count, a batch over the activation
    limit (400), ``device: cuda`` without CUDA, more local ranks than the machine runs (422),
    a full run queue (503 with ``Retry-After``)."""
    body = body or TrainRequest()
    override = body.hyperparams.model_dump(mode="json", exclude_unset=True) \
        if body.hyperparams is not None else None
    try:
        target, overrides = choose(body.target, strategy=body.strategy,
                                   world_size=body.world_size)
        if not body.cuda_graph:
            overrides = {**(overrides or {}), "cuda_graph": False}
        if body.offline is not None:
            overrides = {**(overrides or {}), "offline": body.offline}
        run = service.start_run(model_id, hyperparams=override, dataset=body.dataset,
                                device=body.device, limit=body.limit, target=target,
                                spec_overrides=overrides or None, name=body.name,
                                experiment=body.experiment, tags=body.tags,
                                checkpoint_every=body.checkpoint_every,
                                auto_resume=body.auto_resume)
    except ValueError as exc:
        if type(exc) not in (ValueError, TargetError):  # Conflict / InvalidInput have their own handlers
            raise
        return error_response(422, "input validation failed", [str(exc)])
    record_run_owner(service, run.run_id, key, via="api.train")  # who may cancel it
    return json_response(
        {"run_id": run.run_id, "model_id": run.model_id, "status": run.state}, status_code=202
    )


@router.get("/{model_id}/runs", response_model=RunPage, responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
def list_runs(
    model_id: str, service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """A model's runs, oldest first; follow ``next_cursor`` for the next page."""
    service.get_model(model_id)
    try:
        runs, next_cursor = service.list_runs(model_id=model_id, limit=limit, cursor=cursor)
    except ValueError as exc:
        return error_response(422, "input validation failed", [f"cursor: {exc}"])
    return json_response({"items": [run_view(r) for r in runs], "next_cursor": next_cursor})
