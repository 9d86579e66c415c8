"""Trained parameters in the store: opaque safetensors blobs, one row per saved set of weights.

Nothing here imports torch: the blob is stored as bytes, and ``safetensors_data_bytes`` reads
the format's header directly to size it. A mixin of :class:`workbench.store.Store` (it uses
the store's ``_tx``/``_read`` helpers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import duckdb

from workbench.store.entities import ParamRecord
from workbench.store.models import require_model
from workbench.store.times import aware, utcnow
from workbench.store.values import new_id

PARAM_COLUMNS = "param_id, model_id, run_id, safetensors, size_bytes, created_at"


def safetensors_data_bytes(blob: bytes) -> int | None:
    """Bytes of raw tensor data in a safetensors blob (header excluded), or None if not one.

    Parses the format's header (8-byte little-endian length + JSON) directly: no torch, no
    safetensors package needed.
    """
    if len(blob) < 8:
        return None
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or 8 + n > len(blob):
        return None
    try:
        header = json.loads(bytes(blob[8 : 8 + n]))
    except ValueError:
        return None
    if not isinstance(header, dict):
        return None
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
            total += int(end) - int(start)
        except (KeyError, TypeError, ValueError):
            return None
    return total


class ParamsMixin:
    """Parameter (weights) methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    @staticmethod
    def _param(row: tuple) -> ParamRecord:
        return ParamRecord(
            param_id=row[0],
            model_id=row[1],
            run_id=row[2],
            safetensors=bytes(row[3]),
            size_bytes=int(row[4]),
            created_at=aware(row[5]),
        )

    def save_params(
        self, *, model_id: str, run_id: str | None, safetensors: bytes, size_bytes: int
    ) -> ParamRecord:
        record = ParamRecord(
            param_id=new_id("p_"),
            model_id=model_id,
            run_id=run_id,
            safetensors=bytes(safetensors),
            size_bytes=int(size_bytes),
            created_at=aware(utcnow()),
        )
        with self._tx() as con:
            require_model(con, model_id)
            con.execute(
                f"INSERT INTO params ({PARAM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    record.param_id,
                    record.model_id,
                    record.run_id,
                    record.safetensors,
                    record.size_bytes,
                    record.created_at.replace(tzinfo=None),
                ],
            )
        return record

    def get_params(self, param_id: str) -> ParamRecord | None:
        rows = self._read(f"SELECT {PARAM_COLUMNS} FROM params WHERE param_id = ?", [param_id])
        return self._param(rows[0]) if rows else None

    def list_params(self, *, model_id: str | None = None) -> list[ParamRecord]:
        """Newest first (blobs included)."""
        sql = f"SELECT {PARAM_COLUMNS} FROM params"
        params: list[Any] = []
        if model_id is not None:
            sql += " WHERE model_id = ?"
            params.append(model_id)
        sql += " ORDER BY created_at DESC, param_id DESC"
        return [self._param(r) for r in self._read(sql, params)]
