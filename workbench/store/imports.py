"""Importing a run from a bundle (:mod:`workbench.bundles`): its model, run row, metrics,
event log and trained parameters, in one transaction, under their original ids. A mixin of
:class:`workbench.store.Store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from workbench.store.runs import _INSERT
from workbench.store.summary import store_summary
from workbench.store.times import utcnow
from workbench.store.values import dumps, new_id

if TYPE_CHECKING:
    from workbench.store.entities import RunRecord


def _time(value: Any) -> datetime:
    """A time from a bundle (ISO text or epoch seconds) as naive UTC (now when unreadable)."""
    from datetime import timezone

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), timezone.utc).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return utcnow()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return utcnow()
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
        return parsed
    return utcnow()


class ImportsMixin:
    """Bundle import methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection and RunsMixin
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...
        def get_run(self, run_id: str) -> RunRecord | None: ...
        def _append_event(self, con: duckdb.DuckDBPyConnection, run_id: str, type_: str,
                          when: datetime, data: Any) -> int: ...

    def import_run(self, *, model: dict[str, Any], run: dict[str, Any],
                   metrics: Sequence[Sequence[Any]], events: Sequence[dict[str, Any]],
                   parameters: bytes | None, size_bytes: int | None) -> RunRecord:
        """Store a bundle's run under its own run id (ValueError if this store has it). Its
        model is reused when this store has the same model id with the same architecture,
        else stored under that id (ValueError if the id holds another architecture)."""
        run_id, model_id = str(run["run_id"]), str(model["model_id"])
        with self._tx() as con:
            if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchall():
                raise ValueError(f"run {run_id} is already in this store")
            found = con.execute("SELECT architecture FROM models WHERE model_id = ?",
                                [model_id]).fetchall()
            if found and dumps(model["architecture"]) != dumps(_loads(found[0][0])):
                raise ValueError(f"model {model_id} is in this store with another architecture")
            if not found:
                con.execute("INSERT INTO models (model_id, name, architecture, hyperparams, "
                            "created_at) VALUES (?, ?, ?, ?, ?)",
                            [model_id, str(model.get("name") or model_id),
                             dumps(model["architecture"]), dumps(model.get("hyperparams") or {}),
                             _time(model.get("created_at"))])
            param_id = None
            if parameters is not None:
                param_id = new_id("p_")
                con.execute("INSERT INTO params (param_id, model_id, run_id, safetensors, "
                            "size_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                            [param_id, model_id, run_id, parameters,
                             int(size_bytes or len(parameters)), utcnow()])
            con.execute(_INSERT, [
                run_id, model_id, str(run["state"]), run.get("error"), int(run.get("epoch") or 0),
                int(run.get("epochs_total") or 0), dumps(run.get("hyperparams") or {}),
                str(run.get("dataset") or "mnist"), str(run.get("target") or "local"),
                run.get("device"), param_id, _time(run.get("created_at")),
                _time(run.get("started_at")) if run.get("started_at") else None,
                _time(run.get("finished_at")) if run.get("finished_at") else None, utcnow(),
                str(run.get("name") or run_id), str(run.get("experiment") or "default"),
                [str(t) for t in run.get("tags") or ()], str(run.get("notes") or "")])
            if metrics:
                con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", [
                    [run_id, int(epoch), None if step is None else int(step), str(name),
                     None if value is None else float(value), _time(when)]
                    for epoch, step, name, value, when in metrics])
            for event in events:
                self._append_event(con, run_id, str(event["type"]), _time(event.get("time")),
                                   event.get("data") or {})
            store_summary(con, run_id)
        record = self.get_run(run_id)
        assert record is not None
        return record


def _loads(text: str) -> Any:
    import json

    return json.loads(text)
