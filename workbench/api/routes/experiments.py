"""Organise, find, compare and share runs.

    GET   /api/runs/table?filter=val_accuracy > 0.9 and tag:baseline&sort=-created_at
          &columns=name,lr,best_val_accuracy&limit=100&offset=0   -> {columns, items, total}
    GET   /api/runs/export?format=csv|parquet&filter=...            -> the table as a file
    PATCH /api/runs/{run_id}        {"name", "experiment", "tags", "notes"}  -> the run
    POST  /api/runs/compare         {"run_ids", "metrics", "x"}   -> rows, diff, series
    POST  /api/runs/report          {"run_ids", "metrics", "x", "title"}  -> one HTML file
    GET   /api/experiments | GET /api/tags
    POST  /api/experiments          {"name", "description"}  -> the experiment (409 if it exists)
    GET | PATCH /api/experiments/{name}  {"description"}    -> the experiment

A filter that is not valid is a 422 whose message names the character position.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ...store import FilterError
from ...store.experiments import ExperimentExistsError
from ...store.export import export
from ...store.runs_table import COLUMNS, DEFAULT_COLUMNS
from ..deps import ServiceDep
from ..errors import ERROR_RESPONSES, error_response
from ..policy import requires
from ..schemas import ExperimentCreate, ExperimentUpdate, RunName, RunPublic, RunTag
from ..views import json_response, run_view

router = APIRouter(tags=["experiments"])

MAX_PAGE = 1000
MAX_EXPORT = 100_000


class RunUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RunName | None = None
    experiment: RunName | None = None
    tags: list[RunTag] | None = Field(default=None, max_length=100,
                                      description="replaces the run's tags (no commas)")
    notes: str | None = Field(default=None, max_length=20_000)


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_ids: list[str] = Field(min_length=1, max_length=50)
    metrics: list[str] | None = Field(default=None, max_length=20,
                                      description="default: val_loss, val_accuracy, train_loss")
    x: Literal["epoch", "step", "time"] = "epoch"


class ReportRequest(CompareRequest):
    title: str | None = Field(default=None, max_length=200)


class RunsTablePage(BaseModel):
    columns: list[str]
    items: list[dict[str, Any]]
    total: int = Field(description="rows matching the filter, over all pages")
    next_offset: int | None


def _columns(text: str | None) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else list(DEFAULT_COLUMNS)


def _invalid(exc: ValueError) -> Response:
    return error_response(422, "input validation failed", [str(exc)])


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


FilterQuery = Annotated[str | None, Query(max_length=2000, description=(
    "e.g. val_accuracy > 0.9 and optimizer = adam and tag:baseline"))]
SortQuery = Annotated[str, Query(max_length=100, description=(
    f"a column, '-' for descending; columns: {', '.join(COLUMNS)}"))]
ColumnsQuery = Annotated[str | None, Query(max_length=2000, description="comma-separated")]


@router.get("/runs/table", response_model=RunsTablePage, responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
def runs_table(service: ServiceDep, filter: FilterQuery = None,  # noqa: A002
               sort: SortQuery = "-created_at", columns: ColumnsQuery = None,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
               offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    """The runs table: newest first, any columns, filtered and sorted, one page."""
    try:
        table = service.runs_table(columns=_columns(columns), filter=filter, sort=sort,
                                   limit=limit, offset=offset)
    except (FilterError, ValueError) as exc:
        return _invalid(exc)
    more = offset + len(table.rows) < table.total
    return json_response({"columns": table.columns, "items": [_jsonable(r) for r in table.rows],
                          "total": table.total,
                          "next_offset": offset + len(table.rows) if more else None})


@router.get("/runs/export", responses={**ERROR_RESPONSES, 200: {"content": {
    "text/csv": {}, "application/vnd.apache.parquet": {}}}},
    dependencies=[Depends(requires("read"))])
def export_runs(service: ServiceDep, format: Literal["csv", "parquet"] = "csv",  # noqa: A002
                filter: FilterQuery = None, sort: SortQuery = "-created_at",  # noqa: A002
                columns: ColumnsQuery = None) -> Response:
    """The runs table (every matching row, up to 100,000) as a CSV or Parquet file."""
    try:
        table = service.runs_table(columns=_columns(columns), filter=filter, sort=sort,
                                   limit=MAX_EXPORT)
    except (FilterError, ValueError) as exc:
        return _invalid(exc)
    media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
    return Response(export(table, format), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="runs.{format}"'})


@router.patch("/runs/{run_id}", response_model=RunPublic, responses=ERROR_RESPONSES,
              dependencies=[Depends(requires("train", others="admin", owner_param="run_id"))])
def update_run(run_id: str, body: RunUpdate, service: ServiceDep) -> Response:
    """Rename a run, move it to an experiment, replace its tags or notes. Needs ``train`` for
    a run this key started, ``admin`` for any other."""
    try:
        run = service.update_run(run_id, name=body.name, experiment=body.experiment,
                                 tags=body.tags, notes=body.notes)
    except ValueError as exc:
        if type(exc) is not ValueError:
            raise
        return _invalid(exc)
    return json_response(run_view(run))


@router.post("/runs/compare", responses=ERROR_RESPONSES,
             dependencies=[Depends(requires("read"))])
def compare_runs(body: CompareRequest, service: ServiceDep) -> Response:
    """Runs side by side: their table rows, a diff of their settings (``differs`` marks what
    to highlight) and the points of each metric per run."""
    try:
        data = service.compare_runs(body.run_ids, metrics=body.metrics, x=body.x)
    except ValueError as exc:
        if type(exc) is not ValueError:
            raise
        return _invalid(exc)
    return json_response({**data, "rows": [_jsonable(r) for r in data["rows"]]})


@router.post("/runs/report", responses={**ERROR_RESPONSES, 200: {"content": {"text/html": {}}}},
             dependencies=[Depends(requires("read"))])
def report(body: ReportRequest, service: ServiceDep) -> Response:
    """A self-contained HTML report of the runs (plotly inlined: it works offline)."""
    try:
        page = service.runs_report(body.run_ids, metrics=body.metrics, x=body.x,
                                   title=body.title)
    except ValueError as exc:
        if type(exc) is not ValueError:
            raise
        return _invalid(exc)
    return Response(page, media_type="text/html", headers={
        "Content-Disposition": 'attachment; filename="runs-report.html"'})


@router.get("/experiments", responses=ERROR_RESPONSES, dependencies=[Depends(requires("read"))])
def experiments(service: ServiceDep) -> Response:
    """Every experiment: its description, runs, how many run / succeeded / failed, its newest
    run and its best run (highest validation accuracy)."""
    return json_response({"items": [_jsonable(e) for e in service.experiments()]})


@router.post("/experiments", status_code=201, responses=ERROR_RESPONSES,
             dependencies=[Depends(requires("train"))])
def create_experiment(body: ExperimentCreate, service: ServiceDep) -> Response:
    """A new experiment with a description (409 if one has that name); runs join it by
    naming it (``experiment`` of a run)."""
    try:
        created = service.create_experiment(body.name, body.description)
    except ExperimentExistsError as exc:
        return error_response(409, "experiment exists", [str(exc)])
    except ValueError as exc:
        return _invalid(exc)
    return json_response(_jsonable(created), status_code=201)


@router.get("/experiments/{name:path}", responses=ERROR_RESPONSES,
            dependencies=[Depends(requires("read"))])
def get_experiment(name: str, service: ServiceDep) -> Response:
    """One experiment (a record, or a name runs use) with its counts and best run."""
    return json_response(_jsonable(service.get_experiment(name)))


@router.patch("/experiments/{name:path}", responses=ERROR_RESPONSES,
              dependencies=[Depends(requires("train"))])
def describe_experiment(name: str, body: ExperimentUpdate, service: ServiceDep) -> Response:
    """Set an experiment's description."""
    try:
        return json_response(_jsonable(service.describe_experiment(name, body.description)))
    except ValueError as exc:
        return _invalid(exc)


@router.get("/tags", responses=ERROR_RESPONSES, dependencies=[Depends(requires("read"))])
def tags(service: ServiceDep) -> Response:
    """Every tag and how many runs carry it."""
    return json_response({"items": [{"tag": t, "runs": n} for t, n in service.tags()]})
