"""The dataset registry: ``GET /api/v1/datasets`` (built-ins and registered, with input shape,
classes, counts and normalisation statistics), ``GET /api/v1/datasets/{name}``,
``POST /api/v1/datasets`` (by path inside the data roots: CSV, Parquet, NPZ or an image folder;
or by ``query``: one read-only DuckDB SELECT over registered CSV/Parquet datasets)
and ``POST /api/v1/datasets/upload`` (multipart ``file`` + ``name`` [+ ``label``]; bodies over
WORKBENCH_MAX_BODY_BYTES get 413). Train on one with ``POST /api/v1/networks/{model_id}/train``
and ``"dataset": "<name>"``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ...service import SubmitError
from ..deps import ServiceDep
from .conventions import ID_ERRORS, ok, submit_error
from .security import ReadKey, TrainKey

router = APIRouter(tags=["datasets"])


class DatasetRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64, description="lower-case letters, digits, '.', '_', '-'")
    path: str | None = Field(default=None, max_length=4096,
                             description="a file or image folder in the data roots")
    query: str | None = Field(default=None, max_length=10_000, description="instead of a "
                              "path: one read-only DuckDB SELECT over registered CSV/Parquet "
                              'datasets, named as tables (SELECT * FROM "wine" WHERE ...)')
    label: str = Field(default="label", max_length=200,
                       description="CSV/Parquet/query label column")


@router.get("/datasets", responses=ID_ERRORS)
def list_datasets(service: ServiceDep, _: ReadKey) -> Response:
    """Every dataset a run may name."""
    return ok(service.list_datasets())


@router.get("/datasets/{name}", responses=ID_ERRORS)
def get_dataset(name: str, service: ServiceDep, _: ReadKey) -> Response:
    """One dataset's schema, classes, counts and statistics."""
    return ok(service.get_dataset(name))


@router.post("/datasets", status_code=201, responses=ID_ERRORS)
def register_dataset(body: DatasetRegister, service: ServiceDep, _: TrainKey) -> Response:
    """Register a dataset by path or query (read, described and prepared once)."""
    try:
        return ok(service.register_dataset(body.name, path=body.path, query=body.query,
                                           label=body.label), status_code=201)
    except SubmitError as exc:
        raise submit_error(exc) from None


@router.post("/datasets/upload", status_code=201, responses=ID_ERRORS)
async def upload_dataset(file: UploadFile, name: Annotated[str, Form(max_length=64)],
                         service: ServiceDep, _: TrainKey,
                         label: Annotated[str, Form(max_length=200)] = "label") -> Response:
    """Upload a CSV, Parquet or NPZ file into the home's data directory and register it."""
    content = await file.read()
    try:
        return ok(service.register_dataset(name, upload=(file.filename or "upload", content),
                                           label=label), status_code=201)
    except SubmitError as exc:
        raise submit_error(exc) from None
