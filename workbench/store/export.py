"""Export a runs table as CSV or Parquet bytes.

Parquet is written by DuckDB's own writer (no pyarrow needed) on a private in-memory
connection: the store's connections have no file access, this one sees only the rows it is
handed, column by column as typed lists, and a temporary file it deletes.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from datetime import datetime, timezone
from typing import Any

import duckdb

from workbench.store.runs_table import BASE_COLUMNS, RunsTable

_SQL_TYPES = {"text": "VARCHAR", "number": "DOUBLE", "time": "TIMESTAMP", "list": "VARCHAR[]"}
FORMATS = ("csv", "parquet")


def _kind(column: str) -> str:
    return BASE_COLUMNS[column][1] if column in BASE_COLUMNS else "number"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def to_csv(table: RunsTable) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow([
            " ".join(v) if isinstance(v := row.get(c), list)
            else v.isoformat() if isinstance(v, datetime) else "" if v is None else v
            for c in table.columns])
    return out.getvalue().encode()


def to_parquet(table: RunsTable) -> bytes:
    columns = table.columns
    selects = ", ".join(
        f"unnest(?::{_SQL_TYPES[_kind(c)]}[], recursive := false) AS \"{c}\"" for c in columns)
    values = [[_plain(row.get(c)) for row in table.rows] for c in columns]
    fd, path = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        with duckdb.connect(":memory:") as con:
            con.execute(f"CREATE TABLE runs AS SELECT {selects}", values)
            con.execute(f"COPY runs TO '{path}' (FORMAT parquet)")
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def export(table: RunsTable, fmt: str) -> bytes:
    if fmt == "csv":
        return to_csv(table)
    if fmt == "parquet":
        return to_parquet(table)
    raise ValueError(f"format: one of {', '.join(FORMATS)}, got {fmt!r}")
