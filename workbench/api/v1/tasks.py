"""Tasks (neurogrid): every run is a task. ``GET /api/v1/tasks`` (filters, sort, fields, pages),
``GET /tasks/{id}``, ``DELETE /tasks/{id}`` cancels a queued or running one.

Task statuses are pending, running, completed, failed, cancelled; filters also accept the run
states (queued, succeeded). Ids are run ids (``r_...``); a Cortex ``job_...`` id works too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from ...service import Workbench
from ...store import ApiKeyRecord, RunRecord
from ..deps import ServiceDep
from .conventions import CONFLICT, ID_ERRORS, READ_ERRORS, ApiError, Envelope, ok
from .query import ListQueryDep, ListSpec, equals, paginate
from .security import ReadKey, require
from .views import STATUS_ALIASES, TASK_FIELDS, get_run, task_view

router = APIRouter(prefix="/tasks", tags=["tasks"])

# Cancelling: train for a task this key submitted, admin for any other (workbench.api.policy).
CancelKey = Annotated[ApiKeyRecord, Depends(require("train", others="admin",
                                                    owner_param="task_id"))]


class TaskPublic(BaseModel):
    id: str
    job_id: str
    type: str
    status: str
    state: str
    model: str
    dataset: str
    node_id: str
    device: str | None = None
    epoch: int
    epochs_total: int
    metrics: dict[str, float | None]
    param_id: str | None = None
    error: str | None = None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    duration_s: float | None = None
    cost: float = 0.0


class TaskList(BaseModel):
    tasks: list[TaskPublic]
    total: int


TASK_SPEC = ListSpec(
    fields=TASK_FIELDS,
    sortable=("created_at", "started_at", "completed_at", "status", "model", "epoch",
              "duration_s", "dataset", "node_id", "id", "cost"),
    filters={
        "status": equals("status_key", param="status", aliases=STATUS_ALIASES,
                         allowed=tuple(STATUS_ALIASES)),
        "model": equals("model"),
        "dataset": equals("dataset"),
        "node_id": equals("node_id"),
        "type": equals("type"),
    },
)


def all_runs(service: Workbench) -> Iterator[RunRecord]:
    cursor: str | None = None
    while True:
        runs, cursor = service.list_runs(limit=500, cursor=cursor)
        yield from runs
        if cursor is None:
            return


@router.get("", response_model=Envelope[TaskList], responses=READ_ERRORS)
def list_tasks(
    service: ServiceDep, query: ListQueryDep, _: ReadKey,
    status: Annotated[str | None, Query(max_length=200, description="pending, running, "
                                        "completed, failed, cancelled (comma-separated)")] = None,
    model: Annotated[str | None, Query(max_length=200, description="model id")] = None,
    dataset: Annotated[str | None, Query(max_length=200)] = None,
    node_id: Annotated[str | None, Query(max_length=200, description="compute target")] = None,
    type: Annotated[str | None, Query(max_length=50)] = None,
) -> Response:
    """Tasks, newest first by default: ``data {tasks, total}`` (paging in ``meta.pagination``)."""
    views = []
    for run in all_runs(service):
        view = task_view(run)
        view["status_key"] = run.state  # what the status filter compares (stripped below)
        views.append(view)
    page, meta = paginate(views, query, TASK_SPEC)
    for item in page:
        item.pop("status_key", None)
    return ok({"tasks": page, "total": meta["pagination"]["total"]}, meta=meta)


@router.get("/{task_id}", response_model=Envelope[TaskPublic], responses=ID_ERRORS)
def get_task(task_id: str, service: ServiceDep, _: ReadKey) -> Response:
    """One task."""
    return ok(task_view(get_run(service, task_id, field="task_id")))


@router.delete("/{task_id}", response_model=Envelope[TaskPublic],
               responses={**ID_ERRORS, 409: ID_ERRORS[404] | {"description": "already ended"}})
def cancel_task(task_id: str, service: ServiceDep, _: CancelKey) -> Response:
    """Cancel a pending or running task (409 if it has already ended); another key's task
    needs an admin key."""
    run = get_run(service, task_id, field="task_id")
    if run.is_terminal:
        raise ApiError(409, CONFLICT, f"task {task_id} already ended ({run.state})",
                       field="task_id", details={"status": task_view(run)["status"]})
    return ok(task_view(service.cancel_run(run.run_id)))
