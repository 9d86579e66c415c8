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
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
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
_CHECKPOINT_KEY = "tensors_safetensors_b64"  # a checkpoint's tensors: stored as a file
_BATCH_RUNS_MAX = 1024  # runs whose applied batch ids are kept in memory (re-read when evicted)
_METRIC_COLUMNS = ("key", "value", "step", "epoch", "time")
_MAX_TIME_S = 1e11  # year ~5100: larger "seconds" are not (milliseconds, most likely)


class DuplicateBatch(ValueError):
    """A ``metrics`` event whose ``batch_id`` this run already has (nothing was stored)."""

    def __init__(self, run_id: str, batch_id: str):
        super().__init__(f"run {run_id} already has metrics batch {batch_id!r}")
        self.run_id, self.batch_id = run_id, batch_id


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


def _metric_columns(data: Mapping[str, Any], when: datetime) -> dict[str, Any]:
    """The columns of a ``metrics`` event as numpy arrays of one length (ValueError if the
    event is malformed). Points whose value is not finite are dropped; a missing epoch is 0, a
    missing step is NULL, a missing or unusable time is the event's."""
    import numpy as np

    raw_values = data.get("value")
    n = 0 if raw_values is None else len(raw_values)
    for name in _METRIC_COLUMNS:
        column = data.get(name)
        if column is not None and (isinstance(column, (str, bytes, Mapping))
                                   or not hasattr(column, "__len__") or len(column) != n):
            raise ValueError(f"metrics: column {name!r} must be a list of {n} entries")
    keys = data.get("key")
    if keys is None or not set(map(type, keys)) <= {str}:
        raise ValueError("metrics: 'key' must be a list of strings")

    def floats(name: str) -> Any:  # None -> NaN
        column = data.get(name)
        if column is None:
            return np.full(n, np.nan)
        try:
            return np.array(column, dtype=np.float64).reshape(n)
        except (TypeError, ValueError):
            raise ValueError(f"metrics: {name!r} must be a list of numbers") from None

    value = floats("value")
    seconds = floats("time")
    default_s = when.replace(tzinfo=timezone.utc).timestamp()
    seconds[~(np.isfinite(seconds) & (seconds >= 0) & (seconds < _MAX_TIME_S))] = default_s
    epoch = np.nan_to_num(floats("epoch"), nan=0.0, posinf=0.0, neginf=0.0)
    epoch = np.clip(epoch, 0, 2**31 - 1).astype(np.int32)
    try:  # integral steps, the usual case: exact int64
        step = np.array(data.get("step") if data.get("step") is not None else np.zeros(n),
                        dtype=np.int64).reshape(n)
        step_null = np.zeros(n, dtype=bool) if data.get("step") is not None \
            else np.ones(n, dtype=bool)
    except (TypeError, ValueError, OverflowError):  # None (NULL) or non-integral entries
        as_float = floats("step")
        step_null = ~np.isfinite(as_float) | (np.abs(as_float) >= 2.0**63)
        as_float[step_null] = 0
        step = as_float.astype(np.int64)
    keep = np.isfinite(value)
    names = np.array(keys, dtype=object).reshape(n)
    return {
        "name": names[keep], "value": value[keep], "epoch": epoch[keep], "step": step[keep],
        "step_null": step_null[keep],
        "time": (seconds[keep] * 1e6).astype(np.int64).astype("datetime64[us]"),
    }


def _insert_metrics(con: duckdb.DuckDBPyConnection, run_id: str, columns: dict[str, Any]) -> None:
    """One INSERT of a whole batch: the numpy columns are scanned by DuckDB in place."""
    view = "_workbench_metrics_batch"
    con.register(view, columns)
    try:
        con.execute(
            f"INSERT INTO metrics SELECT ?, epoch, CASE WHEN step_null THEN NULL ELSE step END, "
            f"name, value, time FROM {view}",
            [run_id],
        )
    finally:
        con.unregister(view)


_EVENTS = "events (id, run_id, type, time, data)"  # the columns every event insert gives
STEP_BATCH = 64  # buffered step events written together at most
STEP_FLUSH_S = 1.0  # a buffered step waits at most this long for the next event


@dataclass(frozen=True)
class _PendingStep:
    event_id: int
    run_id: str
    when: datetime
    data: dict[str, Any]
    live: bool  # the run was not terminal
    metric: list[Any] | None  # its step_loss row, when it has one
    buffered_at: float  # time.monotonic()


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: list[list[Any]]) -> None:
    if rows:
        one = "(" + ", ".join("?" * len(rows[0])) + ")"
        con.execute(f"INSERT INTO {table} VALUES " + ", ".join([one] * len(rows)),
                    [v for row in rows for v in row])


class EventsMixin:
    """Event methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection, RunsMixin and ParamsMixin
        _lock: threading.RLock
        _next_event_id: int | None
        _pending_steps: list[_PendingStep]

        def _conn(self, *, flush: bool = True) -> duckdb.DuckDBPyConnection: ...

        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

        def save_params(
            self, *, model_id: str, run_id: str | None, safetensors: bytes, size_bytes: int
        ) -> ParamRecord: ...

        def _save_checkpoint(self, con: duckdb.DuckDBPyConnection, run_id: str, *, epoch: int,
                             global_step: int, state: dict[str, Any], tensors: bytes
                             ) -> dict: ...
        def _drop_checkpoints(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None: ...

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

    def _event_ids(self, con: duckdb.DuckDBPyConnection, count: int) -> range:
        """``count`` new event-log ids. This store is the log's one writer, so ids come from a
        counter (buffered step events need theirs before they are written); it starts past
        both the stored ids and the old id sequence."""
        with self._lock:
            if self._next_event_id is None:
                stored = con.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
                sequence = con.execute("SELECT nextval('events_id_seq')").fetchone()
                self._next_event_id = max(int(stored[0]) + 1, int(sequence[0]))  # type: ignore[index]
            first = self._next_event_id
            self._next_event_id += count
            return range(first, first + count)

    def _append_event(
        self, con: duckdb.DuckDBPyConnection, run_id: str, type_: str, when: datetime, data: Any
    ) -> int:
        return self._insert_event(con, run_id, type_, when, dumps(data))

    def _insert_event(self, con: duckdb.DuckDBPyConnection, run_id: str, type_: str,
                      when: datetime, text: str) -> int:
        event_id = self._event_ids(con, 1)[0]
        _insert_rows(con, _EVENTS, [[event_id, run_id, type_, when, text]])
        return event_id

    # -- coalesced step events -----------------------------------------------------------------
    # The engine samples ~20 step events per epoch; a commit each (an fsync) cost the owner more
    # than the rest of the run's events together. A step gets its id and is listed by
    # ``list_events`` at once, but is written with the next other event, when STEP_BATCH wait,
    # when the oldest has waited STEP_FLUSH_S, or before any other read of the store. An owner
    # killed in between loses at most those sampled steps, never an epoch.

    def _buffer_step(self, run_id: str, data: Mapping[str, Any], when: datetime) -> int:
        with self._lock:
            con = self._conn(flush=False)
            # A buffered step of this run means nothing wrote since (a write empties the buffer),
            # so its state is still the one read then.
            live = next((p.live for p in reversed(self._pending_steps) if p.run_id == run_id),
                        None)
            if live is None:
                row = con.execute("SELECT state FROM runs WHERE run_id = ?", [run_id]).fetchone()
                if row is None:
                    raise ValueError(f"event for unknown run {run_id!r}")
                live = row[0] not in TERMINAL_STATES
            loss = data.get("loss")
            metric = None
            if live and _is_number(loss):
                metric = [run_id, _int_or(data.get("epoch"), 0), _int_or(data.get("step")),
                          STEP_LOSS, float(loss), when]
            event_id = self._event_ids(con, 1)[0]
            self._pending_steps.append(_PendingStep(event_id, run_id, when, dict(data), live,
                                                    metric, time.monotonic()))
            waited = time.monotonic() - self._pending_steps[0].buffered_at
            if len(self._pending_steps) >= STEP_BATCH or waited >= STEP_FLUSH_S:
                self._flush_steps()
            return event_id

    def _flush_steps(self) -> None:
        """Write the buffered step events (one transaction)."""
        with self._lock:
            pending, self._pending_steps = self._pending_steps, []
            if not pending:
                return
            rows = [[p.event_id, p.run_id, ev.STEP, p.when, dumps(p.data)] for p in pending]
            metrics = [p.metric for p in pending if p.metric is not None]
            with self._tx() as con:  # one multi-row INSERT each (executemany runs per row)
                _insert_rows(con, _EVENTS, rows)
                _insert_rows(con, "metrics", metrics)

    def _pending_events(self, run_id: str, after_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [{"id": p.event_id, "type": ev.STEP, "run_id": p.run_id,
                     "time": aware(p.when).timestamp(), "data": dict(p.data)}
                    for p in self._pending_steps if p.run_id == run_id and p.event_id > after_id]

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
        if type_ == ev.STEP:
            return self._buffer_step(run_id, data, when)
        if type_ == ev.METRICS:
            return self._apply_metrics_event(run_id, data, when)

        with self._tx() as con:  # (its connection writes the buffered steps first)
            row = con.execute(
                "SELECT state, model_id FROM runs WHERE run_id = ?", [run_id]
            ).fetchone()
            if row is None:
                raise ValueError(f"event for unknown run {run_id!r}")
            state, model_id = row
            logged = {k: v for k, v in data.items() if k not in (_B64_KEY, _CHECKPOINT_KEY)}
            if state not in TERMINAL_STATES:
                logged = self._apply(con, type_, run_id, model_id, state, data, when, logged)
            return self._append_event(con, run_id, type_, when, logged)

    # -- metrics batches (workbench.track) -----------------------------------------------------

    def _applied_batches(self, con: duckdb.DuckDBPyConnection, run_id: str) -> set[str]:
        """The batch ids already stored for ``run_id`` (read from the event log once per run,
        then kept up to date in memory: this process is the store's only writer)."""
        cache: dict[str, set[str]] = self.__dict__.setdefault("_metric_batches", {})
        seen = cache.get(run_id)
        if seen is None:
            rows = con.execute(
                "SELECT data->>'batch_id' FROM events WHERE run_id = ? AND type = ?",
                [run_id, ev.METRICS],
            ).fetchall()
            seen = {r[0] for r in rows if r[0] is not None}
            while len(cache) >= _BATCH_RUNS_MAX:
                cache.pop(next(iter(cache)))
            cache[run_id] = seen
        return seen

    def _apply_metrics_event(self, run_id: str, data: Mapping[str, Any], when: datetime) -> int:
        """A ``metrics`` batch: every point becomes a ``metrics`` row (one INSERT of the whole
        batch), the event is logged once; a ``batch_id`` seen before raises DuplicateBatch."""
        batch_id = data.get("batch_id")
        if batch_id is not None and not isinstance(batch_id, str):
            raise ValueError("a metrics batch_id must be a string")
        columns = _metric_columns(data, when)
        logged = {"batch_id": batch_id, "count": len(columns["value"]),
                  **{k: data.get(k) for k in _METRIC_COLUMNS}}
        with self._lock, self._tx() as con:
            # fetchall: DuckDB refuses register() while a result is still open
            rows = con.execute("SELECT state FROM runs WHERE run_id = ?", [run_id]).fetchall()
            if not rows:
                raise ValueError(f"event for unknown run {run_id!r}")
            row = rows[0]
            seen = self._applied_batches(con, run_id) if batch_id is not None else None
            if seen is not None and batch_id in seen:
                raise DuplicateBatch(run_id, batch_id)
            if row[0] not in TERMINAL_STATES and len(columns["value"]):
                _insert_metrics(con, run_id, columns)
                top = int(columns["epoch"].max())
                con.execute(
                    "UPDATE runs SET epoch = greatest(epoch, ?), updated_at = ? WHERE run_id = ?",
                    [top, utcnow(), run_id],
                )
            event_id = self._append_event_text(con, run_id, ev.METRICS, when, logged)
            if seen is not None:
                seen.add(batch_id)  # type: ignore[arg-type]  # a str (checked above)
            return event_id

    def _append_event_text(
        self, con: duckdb.DuckDBPyConnection, run_id: str, type_: str, when: datetime,
        data: Mapping[str, Any],
    ) -> int:
        """``_append_event`` for large data: orjson (non-finite floats become null)."""
        import orjson

        return self._insert_event(con, run_id, type_, when,
                                  orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode())

    def event_of_type(self, run_id: str, type_: str) -> dict[str, Any] | None:
        """The first logged event of ``type_`` of a run (its data, time and id), or None."""
        rows = self._read(
            "SELECT id, time, data FROM events WHERE run_id = ? AND type = ? ORDER BY id LIMIT 1",
            [run_id, type_],
        )
        if not rows:
            return None
        i, when, data = rows[0]
        return {"id": int(i), "type": type_, "run_id": run_id,
                "time": aware(when).timestamp(), "data": loads(data) or {}}

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
        # ev.STEP: see _buffer_step
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
            self._drop_checkpoints(con, run_id)
        elif type_ == ev.CHECKPOINT:
            try:
                blob = base64.b64decode(data.get(_CHECKPOINT_KEY) or "", validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise ValueError(f"{_CHECKPOINT_KEY} is not valid base64: {exc}") from None
            saved = dict(data.get("state") or {})
            epoch = _int_or(data.get("epoch"), 0) or 0
            logged = {**logged, **self._save_checkpoint(
                con, run_id, epoch=epoch, global_step=_int_or(saved.get("global_step"), 0) or 0,
                state=saved, tensors=blob)}
        elif type_ == ev.RUN_PAUSED:
            self._transition(con, run_id, state, "paused")
        elif type_ == ev.RUN_RESUMED:
            # Epochs after the checkpoint are trained again: their rows (the epoch the owner
            # or worker died in) go, so the run's history has each epoch once.
            start = _int_or(data.get("from_epoch"), 0) or 0
            con.execute("DELETE FROM metrics WHERE run_id = ? AND epoch > ?", [run_id, start])
            target = data.get("target")
            con.execute("UPDATE runs SET epoch = ?, target = coalesce(?, target), "
                        "error = NULL WHERE run_id = ?",
                        [start, target if isinstance(target, str) else None, run_id])
            self._transition(con, run_id, state, "queued")
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
        with self._lock:  # the stored events and the buffered steps, as of one moment
            rows = self._conn(flush=False).execute(sql, params).fetchall()
            pending = self._pending_events(run_id, int(after_id))
        events = [
            {
                "id": int(i),
                "type": type_,
                "run_id": rid,
                "time": aware(when).timestamp(),
                "data": loads(data) or {},
            }
            for i, rid, type_, when, data in rows
        ]
        if pending:
            events = sorted(events + pending, key=lambda e: e["id"])[:limit]
        return events
