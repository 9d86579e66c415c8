"""Models in the store: an architecture and its hyperparameters, created once, never changed.

A mixin of :class:`workbench.store.Store` (it uses the store's ``_tx``/``_read`` helpers).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import duckdb

from workbench.store.entities import ModelRecord
from workbench.store.times import aware, utcnow
from workbench.store.values import dumps, loads, new_id

MODEL_COLUMNS = "model_id, name, architecture, hyperparams, created_at"


def require_model(con: duckdb.DuckDBPyConnection, model_id: str) -> None:
    """Inside a write transaction: ValueError unless ``model_id`` is a stored model."""
    if con.execute("SELECT 1 FROM models WHERE model_id = ?", [model_id]).fetchone() is None:
        raise ValueError(f"unknown model {model_id!r}")


class ModelsMixin:
    """Model methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    @staticmethod
    def _model(row: tuple) -> ModelRecord:
        return ModelRecord(
            model_id=row[0],
            name=row[1],
            architecture=loads(row[2]) or {},
            hyperparams=loads(row[3]) or {},
            created_at=aware(row[4]),
        )

    def create_model(
        self, *, architecture: dict, hyperparams: dict, name: str | None = None
    ) -> ModelRecord:
        model_id = new_id("m_")
        record = ModelRecord(
            model_id=model_id,
            name=name or model_id,
            architecture=dict(architecture),
            hyperparams=dict(hyperparams),
            created_at=aware(utcnow()),
        )
        with self._tx() as con:
            con.execute(
                f"INSERT INTO models ({MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                [
                    record.model_id,
                    record.name,
                    dumps(record.architecture),
                    dumps(record.hyperparams),
                    record.created_at.replace(tzinfo=None),
                ],
            )
        return record

    def get_model(self, model_id: str) -> ModelRecord | None:
        rows = self._read(f"SELECT {MODEL_COLUMNS} FROM models WHERE model_id = ?", [model_id])
        return self._model(rows[0]) if rows else None

    def list_models(self, *, limit: int = 100, offset: int = 0) -> list[ModelRecord]:
        """Newest first."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        rows = self._read(
            f"SELECT {MODEL_COLUMNS} FROM models "
            "ORDER BY created_at DESC, model_id DESC LIMIT ? OFFSET ?",
            [limit, offset],
        )
        return [self._model(r) for r in rows]

    def count_models(self) -> int:
        return int(self._read("SELECT count(*) FROM models")[0][0])
