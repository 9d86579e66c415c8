"""``POST /api/v1/sql``: read-only SQL over the store's documented views, as ``workbench sql``.

    POST /api/v1/sql  {"query": "SELECT name, max(value) FROM metrics GROUP BY name", "limit": 100}
    -> {"success": true, "data": {"columns": [...], "rows": [[...], ...], "truncated": false}}

The query runs in the store's SQL sandbox (one SELECT, the documented views only, no file,
network or extension access, a time limit). A refused query is 403 ``FORBIDDEN``; a query
DuckDB rejects, or one interrupted by the time limit, is 422 ``VALIDATION_ERROR`` with
DuckDB's message.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..deps import ServiceDep
from .conventions import FORBIDDEN, READ_ERRORS, ApiError, Envelope, ok, validation_error
from .security import ReadKey

router = APIRouter(prefix="/sql", tags=["sql"])

MAX_ROWS = 10_000


class SqlQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=100_000, description="one SELECT statement")
    limit: int = Field(default=1000, ge=1, le=MAX_ROWS, description="at most this many rows")


class SqlResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="true when the result had more than `limit` rows")


@router.post("", response_model=Envelope[SqlResult], responses=READ_ERRORS)
async def run_sql(body: SqlQuery, service: ServiceDep, _: ReadKey) -> Response:
    """Run one read-only query; rows come as JSON arrays (timestamps as ISO strings)."""
    try:
        columns, rows = await run_in_threadpool(service.query, body.query, limit=body.limit + 1)
    except PermissionError as exc:
        raise ApiError(403, FORBIDDEN, str(exc), field="query") from None
    except (ValueError, TimeoutError) as exc:
        raise validation_error("query", str(exc)) from None
    truncated = len(rows) > body.limit
    return ok({"columns": columns, "rows": [[_json_value(v) for v in r] for r in rows[: body.limit]],
               "truncated": truncated})


def _json_value(value: Any) -> Any:
    """DuckDB values orjson writes as they are (numbers, strings, times, lists); others
    (Decimal, UUID, bytes, intervals) as their text."""
    if value is None or isinstance(value, (bool, int, float, str, datetime, date)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)
