"""Runs organised and compared, under the conventions (envelope, ``page``/``limit``/``sort``/
``fields``, VALIDATION_ERROR naming the parameter):

    GET   /api/v1/runs/table?filter=val_accuracy > 0.9 and tag:baseline&sort=createdAt:desc
          &fields=run_id,name,best_val_accuracy&page=1&limit=20   -> rows, meta.pagination
    POST  /api/v1/runs/compare       {"run_ids", "metrics", "x"}  -> rows, diff, series
    GET   /api/v1/experiments?page=&limit=&sort=&fields=           -> experiments
    POST  /api/v1/experiments        {"name", "description"}      -> 201 (409 CONFLICT if it exists)
    GET | PATCH /api/v1/experiments/{name}  {"description"}

The same service calls as ``/api/runs/table``, ``/api/runs/compare`` and ``/api/experiments``.
The runs table is paged in the store (10,000 runs are never all read for one page).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ...store import FilterError
from ...store.experiments import ExperimentExistsError
from ...store.runs_table import COLUMNS, DEFAULT_COLUMNS
from ..deps import ServiceDep
from ..schemas import ExperimentCreate, ExperimentUpdate
from .conventions import (
    CONFLICT,
    ID_ERRORS,
    READ_ERRORS,
    ApiError,
    ErrorEnvelope,
    ok,
    validation_error,
)
from .query import DEFAULT_LIMIT, MAX_LIMIT, ListQueryDep, ListSpec, paginate, snake
from .security import ReadKey, TrainKey

router = APIRouter(tags=["experiments"])

TABLE_PARAMS = frozenset({"page", "limit", "sort", "fields", "filter"})


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def _table_sort(text: str | None) -> str:
    """``createdAt:desc`` (the conventions) as the store's ``-created_at``."""
    if not text:
        return "-created_at"
    key, _, direction = text.partition(":")
    name, direction = snake(key.strip()), (direction or "asc").strip().lower()
    if name not in COLUMNS:
        raise validation_error("sort", f"cannot sort by {key!r}; sortable: {', '.join(COLUMNS)}",
                               value=text)
    if direction not in ("asc", "desc"):
        raise validation_error("sort", f"direction must be 'asc' or 'desc', got {direction!r}",
                               value=text)
    return ("-" if direction == "desc" else "") + name


def _table_fields(text: str | None) -> list[str]:
    if text is None:
        return list(DEFAULT_COLUMNS)
    wanted = [snake(f.strip()) for f in text.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in COLUMNS]
    if not wanted or unknown:
        raise validation_error("fields", f"unknown field(s) {', '.join(unknown) or '(none)'}; "
                               f"known: {', '.join(COLUMNS)}", value=text)
    return list(dict.fromkeys(wanted))


@router.get("/runs/table", responses=READ_ERRORS)
def runs_table(
    request: Request, service: ServiceDep, _: ReadKey,
    filter: Annotated[str | None, Query(max_length=2000, description=(  # noqa: A002
        "e.g. val_accuracy > 0.9 and optimizer = adam and tag:\"two words\""))] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")] = DEFAULT_LIMIT,
    sort: Annotated[str | None, Query(max_length=100, description="column:asc|desc, e.g. "
                                      "bestValAccuracy:desc (default createdAt:desc)")] = None,
    fields: Annotated[str | None, Query(max_length=2000, description="comma-separated "
                                        "columns")] = None,
) -> Response:
    """The runs table, newest first: any columns, filtered, sorted, one page."""
    unknown = [p for p in request.query_params if p not in TABLE_PARAMS]
    if unknown:
        raise validation_error(unknown[0], "unknown query parameter; allowed: "
                               f"{', '.join(sorted(TABLE_PARAMS))}")
    columns, order = _table_fields(fields), _table_sort(sort)
    offset = (page - 1) * limit
    try:
        table = service.runs_table(columns=columns, filter=filter, sort=order, limit=limit,
                                   offset=offset)
    except FilterError as exc:
        raise validation_error("filter", exc.reason, position=exc.position) from None
    except ValueError as exc:
        raise validation_error("filter", str(exc)) from None
    pages = math.ceil(table.total / limit) if table.total else 0
    return ok([_jsonable(r) for r in table.rows], meta={"pagination": {
        "total": table.total, "page": page, "limit": limit, "pages": pages}})


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_ids: list[Annotated[str, Field(max_length=100)]] = Field(min_length=1, max_length=50)
    metrics: list[Annotated[str, Field(max_length=100)]] | None = Field(
        default=None, max_length=20, description="default: val_loss, val_accuracy, train_loss")
    x: Literal["epoch", "step", "time"] = "epoch"


@router.post("/runs/compare", responses=ID_ERRORS)
def compare_runs(body: CompareBody, service: ServiceDep, _: ReadKey) -> Response:
    """Runs side by side: their rows, a diff of their settings (``differs``), each metric's
    points per run and the runs' names."""
    try:
        data = service.compare_runs(body.run_ids, metrics=body.metrics, x=body.x)
    except ValueError as exc:
        if type(exc) is not ValueError:
            raise
        raise validation_error("run_ids", str(exc)) from None
    return ok({**data, "rows": [_jsonable(r) for r in data["rows"]]})


EXPERIMENT_SPEC = ListSpec(
    fields=("name", "description", "created_at", "runs", "running", "succeeded", "failed",
            "last_run_at", "best"),
    sortable=("name", "created_at", "runs", "last_run_at"),
    default_sort=("last_run_at", True))


@router.get("/experiments", responses=READ_ERRORS)
def list_experiments(service: ServiceDep, query: ListQueryDep, _: ReadKey) -> Response:
    """Every experiment: description, runs per state, newest run, best run."""
    items, meta = paginate([_jsonable(e) for e in service.experiments()], query,
                           EXPERIMENT_SPEC)
    return ok(items, meta=meta)


@router.post("/experiments", status_code=201, responses={**ID_ERRORS, 409: {
    "model": ErrorEnvelope, "description": "an experiment has that name (CONFLICT)"}})
def create_experiment(body: ExperimentCreate, service: ServiceDep, _: TrainKey) -> Response:
    """A new experiment with a description; runs join it by naming it."""
    try:
        created = service.create_experiment(body.name, body.description)
    except ExperimentExistsError as exc:
        raise ApiError(409, CONFLICT, str(exc), field="name") from None
    except ValueError as exc:
        raise validation_error("name", str(exc)) from None
    return ok(_jsonable(created), status_code=201)


@router.get("/experiments/{name:path}", responses=ID_ERRORS)
def get_experiment(name: str, service: ServiceDep, _: ReadKey) -> Response:
    return ok(_jsonable(service.get_experiment(name)))


@router.patch("/experiments/{name:path}", responses=ID_ERRORS)
def describe_experiment(name: str, body: ExperimentUpdate, service: ServiceDep,
                        _: TrainKey) -> Response:
    """Set an experiment's description."""
    try:
        return ok(_jsonable(service.describe_experiment(name, body.description)))
    except ValueError as exc:
        raise validation_error("description", str(exc)) from None
