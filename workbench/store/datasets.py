"""The dataset registry in the store: one row per dataset with its schema, class names, counts
and normalisation statistics (computed once, by ``workbench.data.tables.prepare``) and where
its prepared file lies. A mixin of :class:`workbench.store.Store`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import duckdb

from workbench.store.times import to_db_opt, utcnow

_COLUMNS = ("dataset_id, name, kind, source, file, input_shape, classes, counts, stats, "
            "n_samples, created_at")


@dataclass(frozen=True)
class DatasetRecord:
    dataset_id: str
    name: str
    kind: str  # table | images | builtin
    source: str  # where it was read from (a path, "upload:<file name>", "scikit-learn")
    file: str | None  # the prepared .npz
    input_shape: list[int]
    classes: list[str]
    counts: list[int]
    stats: dict[str, Any] = field(default_factory=dict)  # mean, std, feature_names
    n_samples: int = 0
    created_at: datetime | None = None


class DatasetsMixin:
    if TYPE_CHECKING:
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    @staticmethod
    def _dataset(row: tuple) -> DatasetRecord:
        values = list(row)
        for i in (5, 6, 7, 8):
            values[i] = json.loads(values[i])
        return DatasetRecord(*values)

    def create_dataset(self, *, name: str, kind: str, source: str, file: str | None,
                       input_shape: list[int], classes: list[str], counts: list[int],
                       stats: dict[str, Any], n_samples: int) -> DatasetRecord:
        dataset_id = "ds_" + uuid4().hex[:16]
        with self._tx() as con:
            con.execute(
                f"INSERT INTO datasets ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [dataset_id, name, kind, source, file, json.dumps(input_shape),
                 json.dumps(classes), json.dumps(counts), json.dumps(stats), n_samples,
                 to_db_opt(utcnow())])
        record = self.get_dataset(dataset_id)
        assert record is not None
        return record

    def get_dataset(self, id_or_name: str) -> DatasetRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM datasets WHERE dataset_id = ? OR name = ?",
                          [id_or_name, id_or_name])
        return self._dataset(rows[0]) if rows else None

    def list_datasets(self) -> list[DatasetRecord]:
        return [self._dataset(r) for r in
                self._read(f"SELECT {_COLUMNS} FROM datasets ORDER BY created_at, name")]
