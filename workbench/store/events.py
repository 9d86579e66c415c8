"""The event log and the writer path: ``apply_event`` turns one training event into store rows.

Each event (see :mod:`workbench.events`) is applied in one transaction: appended to ``events``
and, unless its run is already terminal, applied to the run (state, epoch), to ``metrics`` and
to ``params`` (the base64 weights of ``run.completed`` are stored once, there). Whatever a
crashed process had committed is kept. A mixin of :class:`workbench.store.Store`.
"""

from __future__ import annotations

import base64
import binascii
import math
import numbers
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeGuard

import duckdb

from workbench import events as ev
from workbench.store.entities import TERMINAL_STATES, ParamRecord
from workbench.store.metrics import STEP_LOSS
from workbench.store.params import safetensors_data_bytes
from workbench.store.times import aware, to_db, utcnow
from workbench.store.values import dumps, loads

_B64_KEY = "parameters_safetensors_b64"


def _to_db_time(value: Any) -> datetime:
    """An event's ``time`` (epoch seconds, or a datetime) as naive UTC; now if unusable."""
    if isinstance(value, datetime):
        return to_db(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds):
            try:
                return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)
            except (OverflowError, OSError, ValueError):
                pass
    return utcnow()


def _is_number(value: Any) -> TypeGuard[float]:
    # Narrowed to float for the type checker: int(), float() and comparisons work on any Real.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _int_or(value: Any, default: int | None = None) -> int | None:
    return int(value) if _is_number(value) and math.isfinite(float(value)) else default


class EventsMixin:
    """Event methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection, RunsMixin and ParamsMixin
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

        def save_params(
            self, *, model_id: str, run_id: str | None, safetensors: bytes, size_bytes: int
        ) -> ParamRecord: ...

        @staticmethod
        def _transition(
            con: duckdb.DuckDBPyConnection,
            run_id: str,
            current: str,
            state: str,
            *,
            error: str | None = None,
            device: str | None = None,
            epochs_total: int | None = None,
            param_id: str | None = None,
        ) -> None: ...

    @staticmethod
    def _append_event(
        con: duckdb.DuckDBPyConnection, run_id: str, type_: str, when: datetime, data: Any
    ) -> int:
        row = con.execute(
            "INSERT INTO events (run_id, type, time, data) VALUES (?, ?, ?, ?) RETURNING id",
            [run_id, type_, when, dumps(data)],
        ).fetchone()
        assert row is not None  # INSERT ... RETURNING yields the new row
        return int(row[0])

    def apply_event(self, event: Mapping[str, Any]) -> int:
        """Apply one training event (see :mod:`workbench.events`) in one transaction; returns
        the id it got in the event log (increasing: faces resume from the last id they saw).

        The event is appended to the event log; its effect on the run is applied unless the run
        is already terminal. The base64 weights of ``run.completed`` are stored once, in
        ``params``; the logged copy of the event carries ``param_id``/``size_bytes`` instead.
        """
        if not isinstance(event, Mapping):
            raise ValueError("an event must be a mapping")
        type_ = event.get("type")
        run_id = event.get("run_id")
        if not isinstance(type_, str) or not isinstance(run_id, str):
            raise ValueError("an event needs a string 'type' and 'run_id'")
        data = event.get("data") or {}
        if not isinstance(data, Mapping):
            raise ValueError("an event's 'data' must be a mapping")
        when = _to_db_time(event.get("time"))

        with self._tx() as con:
            row = con.execute(
                "SELECT state, model_id FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
            if row is None:
                raise ValueError(f"event for unknown run {run_id!r}")
            state, model_id = row
            logged = {k: v for k, v in data.items() if k != _B64_KEY}
            if state not in TERMINAL_STATES:
                logged = self._apply(con, type_, run_id, model_id, state, data, when, logged)
            return self._append_event(con, run_id, type_, when, logged)

    def _apply(
        self,
        con: duckdb.DuckDBPyConnection,
        type_: str,
        run_id: str,
        model_id: str,
        state: str,
        data: Mapping[str, Any],
        when: datetime,
        logged: dict[str, Any],
    ) -> dict[str, Any]:
        if type_ == ev.RUN_STARTED:
            total = data.get("epochs_total")
            device = data.get("device")
            self._transition(
                con,
                run_id,
                state,
                "running",
                device=str(device) if device is not None else None,
                epochs_total=int(total) if _is_number(total) else None,
            )
        elif type_ == ev.STEP:
            loss = data.get("loss")
            if _is_number(loss):
                con.execute(
                    "INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        run_id,
                        _int_or(data.get("epoch"), 0),
                        _int_or(data.get("step")),
                        STEP_LOSS,
                        float(loss),
                        when,
                    ],
                )
        elif type_ == ev.EVALUATION:
            epoch = _int_or(data.get("epoch"), 0)
            names = [n for n in ev.EVALUATION_METRICS if _is_number(data.get(n))]
            for name in names:
                con.execute("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)",
                            [run_id, epoch, None, name, float(data[name]), when])
        elif type_ == ev.EPOCH:
            epoch = _int_or(data.get("epoch"), 0)
            step = _int_or(data.get("step"))
            names = [n for n in ev.EPOCH_METRICS if _is_number(data.get(n))]
            names += [
                k
                for k, v in data.items()
                if k not in ("epoch", "step") and k not in ev.EPOCH_METRICS and _is_number(v)
            ]
            if names:
                values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(names))
                params: list[Any] = []
                for name in names:
                    params += [run_id, epoch, step, str(name), float(data[name]), when]
                con.execute(f"INSERT INTO metrics VALUES {values}", params)
            con.execute(
                "UPDATE runs SET epoch = ?, updated_at = ? WHERE run_id = ?",
                [epoch, utcnow(), run_id],
            )
        elif type_ == ev.RUN_COMPLETED:
            param_id = None
            encoded = data.get(_B64_KEY)
            if encoded:
                try:
                    blob = base64.b64decode(encoded, validate=True)
                except (binascii.Error, TypeError, ValueError) as exc:
                    raise ValueError(f"{_B64_KEY} is not valid base64: {exc}") from None
                size = data.get("size_bytes")
                if not (_is_number(size) and size > 0):
                    size = safetensors_data_bytes(blob)
                    if size is None:
                        size = len(blob)
                record = self.save_params(
                    model_id=model_id, run_id=run_id, safetensors=blob, size_bytes=int(size)
                )
                param_id = record.param_id
                logged = {**logged, "param_id": param_id, "size_bytes": record.size_bytes}
            self._transition(con, run_id, state, "succeeded", param_id=param_id)
        elif type_ == ev.RUN_FAILED:
            error = data.get("error")
            self._transition(con, run_id, state, "failed", error=str(error or "failed"))
        elif type_ == ev.RUN_CANCELLED:
            self._transition(con, run_id, state, "cancelled")
        # Unknown types are only logged (forward compatible).
        return logged

    def list_events(
        self, run_id: str, *, after_id: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Logged events of a run with id > ``after_id``, oldest first, each with its "id".

        ``time`` is returned as epoch seconds, like the events the engine emits.
        """
        sql = "SELECT id, run_id, type, time, data FROM events WHERE run_id = ? AND id > ? ORDER BY id"
        params: list[Any] = [run_id, int(after_id)]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [
            {
                "id": int(i),
                "type": type_,
                "run_id": rid,
                "time": aware(when).timestamp(),
                "data": loads(data) or {},
            }
            for i, rid, type_, when, data in self._read(sql, params)
        ]
