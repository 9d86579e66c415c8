"""DuckDB-backed store: models, runs, long-form metrics, trained parameters and the event log.

One ``duckdb`` connection per ``Store`` guarded by a re-entrant lock, so the server may apply
events from several threads. Every write is one transaction (``apply_event`` commits per event),
so whatever a crashed process had committed -- e.g. the metrics of finished epochs -- is there
when the file is opened again (DuckDB replays its write-ahead log).

No SQL leaves this module: callers get entities from :mod:`workbench.store.entities`. Trained
weights are kept as opaque safetensors bytes; nothing here imports torch.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import numbers
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeGuard
from uuid import uuid4

import duckdb

from workbench import events as ev
from workbench.config import get_settings
from workbench.store.entities import (
    RUN_STATES,
    TERMINAL_STATES,
    MetricRecord,
    ModelRecord,
    ParamRecord,
    RunRecord,
)
from workbench.store.keys import KeysMixin
from workbench.store.migrations import migrate
from workbench.store.nodes import NodesMixin
from workbench.store.times import aware, aware_opt, to_db, utcnow

__all__ = ["Store", "StoreLockedError", "safetensors_data_bytes"]

STEP_LOSS = "step_loss"
INTERRUPTED = "interrupted"
_B64_KEY = "parameters_safetensors_b64"
_MEMORY = ":memory:"

_RUN_COLUMNS = (
    "run_id, model_id, state, error, epoch, epochs_total, hyperparams, dataset, target, "
    "device, param_id, created_at, started_at, finished_at, updated_at"
)
_MODEL_COLUMNS = "model_id, name, architecture, hyperparams, created_at"
_PARAM_COLUMNS = "param_id, model_id, run_id, safetensors, size_bytes, created_at"

# Paths open for writing in this process: a second writable Store on the same file shares
# DuckDB's database instance, and must not mark the first one's live runs as interrupted.
_open_writers: dict[str, int] = {}
_open_writers_lock = threading.Lock()


class StoreLockedError(RuntimeError):
    """The DuckDB file is held by another process (DuckDB allows one writer process)."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        self.message = message
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# small helpers


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


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_json_safe(value), default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _new_id(prefix: str) -> str:
    return prefix + uuid4().hex


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


def _encode_cursor(created_at: datetime, run_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, run_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(created, str) or not isinstance(run_id, str):
            raise TypeError
        when = datetime.fromisoformat(created)
    except (binascii.Error, UnicodeError, ValueError, TypeError, AttributeError):
        raise ValueError("invalid cursor") from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when, run_id


def _locked_message(path: Path, detail: str) -> str:
    return (
        f"another process owns the workbench store {path} (DuckDB allows a single writing "
        "process). Talk to that process instead: if it is the workbench server, set "
        "WORKBENCH_SERVER_URL (e.g. http://127.0.0.1:8000) or use the server's API; otherwise "
        f"stop it and try again. DuckDB said: {detail}"
    )


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    target = _MEMORY if str(path) == _MEMORY else str(path)
    try:
        return duckdb.connect(target, read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StoreLockedError(path, _locked_message(path, text)) from exc
        raise
    except duckdb.ConnectionException as exc:
        text = str(exc)
        if "different configuration" in text:
            raise StoreLockedError(
                path,
                f"the workbench store {path} is already open in this process in a different "
                "mode (read-only vs writable); reuse that Store object. "
                f"DuckDB said: {text}",
            ) from exc
        raise


# --------------------------------------------------------------------------------------------


class Store(KeysMixin, NodesMixin):
    """The workbench's DuckDB store. Thread-safe; use as a context manager or call close()."""

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False):
        self.path = Path(get_settings().db_path if path is None else path)
        if str(self.path) != _MEMORY:
            self.path = self.path.expanduser()
        self.read_only = read_only
        self._lock = threading.RLock()
        self._tx_depth = 0
        self._closed = False
        self._registered: str | None = None
        self.interrupted_on_open: list[str] = []

        in_memory = str(self.path) == _MEMORY
        if read_only and not in_memory and not self.path.exists():
            raise FileNotFoundError(f"no workbench store at {self.path}")
        if not read_only and not in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)

        self._con: duckdb.DuckDBPyConnection | None = _connect(self.path, read_only)
        try:
            if not read_only:
                migrate(self._con)
                first_writer = True
                if not in_memory:
                    key = str(self.path.resolve())
                    with _open_writers_lock:
                        first_writer = _open_writers.get(key, 0) == 0
                        _open_writers[key] = _open_writers.get(key, 0) + 1
                    self._registered = key
                if first_writer:
                    self.interrupted_on_open = self.recover_interrupted()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            con, self._con = self._con, None
            try:
                if con is not None and not self.read_only and str(self.path) != _MEMORY:
                    try:
                        con.execute("CHECKPOINT")
                    except duckdb.Error:
                        pass  # the WAL still holds everything committed
            finally:
                if con is not None:
                    con.close()
                if self._registered is not None:
                    with _open_writers_lock:
                        left = _open_writers.get(self._registered, 1) - 1
                        if left > 0:
                            _open_writers[self._registered] = left
                        else:
                            _open_writers.pop(self._registered, None)
                    self._registered = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "writable"
        return f"Store({str(self.path)!r}, {mode}{', closed' if self._closed else ''})"

    @property
    def closed(self) -> bool:
        return self._closed

    # -- internals ----------------------------------------------------------------------------

    def _conn(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise RuntimeError("the store is closed")
        return self._con

    def _require_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"the store {self.path} is opened read-only")

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction (re-entrant: nested uses join the outer transaction)."""
        self._require_writable()
        with self._lock:
            con = self._conn()
            if self._tx_depth:
                self._tx_depth += 1
                try:
                    yield con
                finally:
                    self._tx_depth -= 1
                return
            con.begin()
            self._tx_depth = 1
            try:
                yield con
            except BaseException:
                self._tx_depth = 0
                con.rollback()
                raise
            self._tx_depth = 0
            try:
                con.commit()
            except BaseException:
                try:
                    con.rollback()
                except duckdb.Error:
                    pass
                raise

    def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with self._lock:
            return self._conn().execute(sql, params or []).fetchall()

    @staticmethod
    def _model(row: tuple) -> ModelRecord:
        return ModelRecord(
            model_id=row[0],
            name=row[1],
            architecture=_loads(row[2]) or {},
            hyperparams=_loads(row[3]) or {},
            created_at=aware(row[4]),
        )

    @staticmethod
    def _run(row: tuple, metrics: dict[str, float] | None = None) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            model_id=row[1],
            state=row[2],
            error=row[3],
            epoch=row[4],
            epochs_total=row[5],
            hyperparams=_loads(row[6]) or {},
            dataset=row[7],
            target=row[8],
            device=row[9],
            param_id=row[10],
            created_at=aware(row[11]),
            started_at=aware_opt(row[12]),
            finished_at=aware_opt(row[13]),
            updated_at=aware(row[14]),
            metrics=dict(metrics or {}),
        )

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

    def _latest_metrics(self, run_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """For each run, {name: value} of its highest epoch (step-level losses excluded)."""
        if not run_ids:
            return {}
        rows = self._read(
            """
            WITH wanted AS (SELECT unnest(?::VARCHAR[]) AS run_id),
            latest AS (
                SELECT m.run_id, max(m.epoch) AS epoch
                FROM metrics m JOIN wanted w ON m.run_id = w.run_id
                WHERE m.name <> ?
                GROUP BY m.run_id
            )
            SELECT m.run_id, m.name, m.value
            FROM metrics m JOIN latest l ON m.run_id = l.run_id AND m.epoch = l.epoch
            WHERE m.name <> ?
            ORDER BY m.run_id, m.time, m.name
            """,
            [list(run_ids), STEP_LOSS, STEP_LOSS],
        )
        out: dict[str, dict[str, float]] = {}
        for run_id, name, value in rows:
            out.setdefault(run_id, {})[name] = value
        return out

    # -- models -------------------------------------------------------------------------------

    def create_model(
        self, *, architecture: dict, hyperparams: dict, name: str | None = None
    ) -> ModelRecord:
        model_id = _new_id("m_")
        record = ModelRecord(
            model_id=model_id,
            name=name or model_id,
            architecture=dict(architecture),
            hyperparams=dict(hyperparams),
            created_at=aware(utcnow()),
        )
        with self._tx() as con:
            con.execute(
                f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                [
                    record.model_id,
                    record.name,
                    _dumps(record.architecture),
                    _dumps(record.hyperparams),
                    record.created_at.replace(tzinfo=None),
                ],
            )
        return record

    def get_model(self, model_id: str) -> ModelRecord | None:
        rows = self._read(f"SELECT {_MODEL_COLUMNS} FROM models WHERE model_id = ?", [model_id])
        return self._model(rows[0]) if rows else None

    def list_models(self, *, limit: int = 100, offset: int = 0) -> list[ModelRecord]:
        """Newest first."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        rows = self._read(
            f"SELECT {_MODEL_COLUMNS} FROM models "
            "ORDER BY created_at DESC, model_id DESC LIMIT ? OFFSET ?",
            [limit, offset],
        )
        return [self._model(r) for r in rows]

    def count_models(self) -> int:
        return int(self._read("SELECT count(*) FROM models")[0][0])

    # -- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        model_id: str,
        hyperparams: dict,
        epochs_total: int,
        dataset: str = "mnist",
        target: str = "local",
    ) -> RunRecord:
        now = utcnow()
        run_id = _new_id("r_")
        with self._tx() as con:
            if (
                con.execute("SELECT 1 FROM models WHERE model_id = ?", [model_id]).fetchone()
                is None
            ):
                raise ValueError(f"unknown model {model_id!r}")
            con.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) "
                "VALUES (?, ?, 'queued', NULL, 0, ?, ?, ?, ?, NULL, NULL, ?, NULL, NULL, ?)",
                [
                    run_id,
                    model_id,
                    int(epochs_total),
                    _dumps(hyperparams),
                    dataset,
                    target,
                    now,
                    now,
                ],
            )
        return RunRecord(
            run_id=run_id,
            model_id=model_id,
            state="queued",
            error=None,
            epoch=0,
            epochs_total=int(epochs_total),
            hyperparams=json.loads(_dumps(hyperparams)),
            dataset=dataset,
            target=target,
            device=None,
            param_id=None,
            created_at=aware(now),
            started_at=None,
            finished_at=None,
            updated_at=aware(now),
            metrics={},
        )

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id])
            if not rows:
                return None
            return self._run(rows[0], self._latest_metrics([run_id]).get(run_id))

    @staticmethod
    def _run_filters(
        *,
        model_id: str | None,
        state: str | Sequence[str] | None,
        dataset: str | None,
        target: str | None,
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("model_id", model_id), ("dataset", dataset), ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            where.append("list_contains(?::VARCHAR[], state)")
            params.append(states)
        return where, params

    def list_runs(
        self,
        *,
        model_id: str | None = None,
        state: str | Sequence[str] | None = None,
        dataset: str | None = None,
        target: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
        order: str = "asc",
    ) -> tuple[list[RunRecord], str | None]:
        """One page of runs ordered by (created_at, run_id), and the cursor of the next page.

        ``cursor`` is the opaque string a previous call returned (None: first page); the
        returned cursor is None on the last page. ``state`` may be one state or several.
        """
        if order not in ("asc", "desc"):
            raise ValueError("order must be 'asc' or 'desc'")
        if limit < 1:
            raise ValueError("limit must be >= 1")
        where, params = self._run_filters(
            model_id=model_id, state=state, dataset=dataset, target=target
        )
        if cursor is not None:
            after_time, after_id = _decode_cursor(cursor)
            op = ">" if order == "asc" else "<"
            where.append(f"(created_at {op} ? OR (created_at = ? AND run_id {op} ?))")
            params += [after_time, after_time, after_id]
        direction = order.upper()
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY created_at {direction}, run_id {direction} LIMIT ?"
        )
        with self._lock:
            rows = self._read(sql, [*params, limit + 1])
            more = len(rows) > limit
            rows = rows[:limit]
            metrics = self._latest_metrics([r[0] for r in rows])
        runs = [self._run(r, metrics.get(r[0])) for r in rows]
        next_cursor = _encode_cursor(rows[-1][11], rows[-1][0]) if more and rows else None
        return runs, next_cursor

    def count_runs(
        self,
        *,
        model_id: str | None = None,
        state: str | Sequence[str] | None = None,
        dataset: str | None = None,
        target: str | None = None,
    ) -> int:
        where, params = self._run_filters(
            model_id=model_id, state=state, dataset=dataset, target=target
        )
        sql = "SELECT count(*) FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._read(sql, params)[0][0])

    def set_run_state(
        self,
        run_id: str,
        state: str,
        *,
        error: str | None = None,
        device: str | None = None,
    ) -> None:
        """Move a run to ``state``. A terminal run cannot move to another state (ValueError)."""
        with self._tx() as con:
            row = con.execute("SELECT state FROM runs WHERE run_id = ?", [run_id]).fetchone()
            if row is None:
                raise ValueError(f"unknown run {run_id!r}")
            self._transition(con, run_id, row[0], state, error=error, device=device)

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
    ) -> None:
        if state not in RUN_STATES:
            raise ValueError(f"unknown run state {state!r}; expected one of {RUN_STATES}")
        if current in TERMINAL_STATES and state != current:
            raise ValueError(f"run {run_id} is already {current}; it cannot become {state}")
        now = utcnow()
        sets = ["state = ?", "updated_at = ?"]
        params: list[Any] = [state, now]
        if state == "running":
            sets.append("started_at = coalesce(started_at, ?)")
            params.append(now)
        if state in TERMINAL_STATES and current not in TERMINAL_STATES:
            sets.append("finished_at = ?")
            params.append(now)
        for column, value in (
            ("error", error),
            ("device", device),
            ("epochs_total", epochs_total),
            ("param_id", param_id),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        con.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", [*params, run_id])

    def recover_interrupted(self) -> list[str]:
        """Mark runs left 'running' (by a process that died) as failed, error "interrupted".

        Queued runs are left alone (the server decides whether to start them). A ``run.failed``
        event is appended for each, so event-log readers see the run end. Returns the run ids.
        """
        with self._tx() as con:
            ids = [
                r[0]
                for r in con.execute(
                    "SELECT run_id FROM runs WHERE state = 'running' ORDER BY created_at, run_id"
                ).fetchall()
            ]
            for run_id in ids:
                self._transition(con, run_id, "running", "failed", error=INTERRUPTED)
                self._append_event(con, run_id, ev.RUN_FAILED, utcnow(), {"error": INTERRUPTED})
        return ids

    # -- events -------------------------------------------------------------------------------

    @staticmethod
    def _append_event(
        con: duckdb.DuckDBPyConnection, run_id: str, type_: str, when: datetime, data: Any
    ) -> int:
        row = con.execute(
            "INSERT INTO events (run_id, type, time, data) VALUES (?, ?, ?, ?) RETURNING id",
            [run_id, type_, when, _dumps(data)],
        ).fetchone()
        assert row is not None  # INSERT ... RETURNING yields the new row
        return int(row[0])

    def apply_event(self, event: Mapping[str, Any]) -> None:
        """Apply one training event (see :mod:`workbench.events`) in one transaction.

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
            self._append_event(con, run_id, type_, when, logged)

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
                "data": _loads(data) or {},
            }
            for i, rid, type_, when, data in self._read(sql, params)
        ]

    # -- params -------------------------------------------------------------------------------

    def save_params(
        self, *, model_id: str, run_id: str | None, safetensors: bytes, size_bytes: int
    ) -> ParamRecord:
        record = ParamRecord(
            param_id=_new_id("p_"),
            model_id=model_id,
            run_id=run_id,
            safetensors=bytes(safetensors),
            size_bytes=int(size_bytes),
            created_at=aware(utcnow()),
        )
        with self._tx() as con:
            if (
                con.execute("SELECT 1 FROM models WHERE model_id = ?", [model_id]).fetchone()
                is None
            ):
                raise ValueError(f"unknown model {model_id!r}")
            con.execute(
                f"INSERT INTO params ({_PARAM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
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
        rows = self._read(f"SELECT {_PARAM_COLUMNS} FROM params WHERE param_id = ?", [param_id])
        return self._param(rows[0]) if rows else None

    def list_params(self, *, model_id: str | None = None) -> list[ParamRecord]:
        """Newest first (blobs included)."""
        sql = f"SELECT {_PARAM_COLUMNS} FROM params"
        params: list[Any] = []
        if model_id is not None:
            sql += " WHERE model_id = ?"
            params.append(model_id)
        sql += " ORDER BY created_at DESC, param_id DESC"
        return [self._param(r) for r in self._read(sql, params)]

    # -- metrics ------------------------------------------------------------------------------

    def get_metrics(self, run_id: str, *, names: Sequence[str] | None = None) -> list[MetricRecord]:
        """Long-form metrics of a run ordered by epoch, step, name (``step_loss`` included)."""
        sql = "SELECT run_id, epoch, step, name, value, time FROM metrics WHERE run_id = ?"
        params: list[Any] = [run_id]
        if names is not None:
            sql += " AND list_contains(?::VARCHAR[], name)"
            params.append(list(names))
        sql += " ORDER BY epoch, step NULLS FIRST, name, time"
        return [
            MetricRecord(
                run_id=r[0], epoch=r[1], step=r[2], name=r[3], value=r[4], time=aware(r[5])
            )
            for r in self._read(sql, params)
        ]

    # -- ad-hoc SQL ---------------------------------------------------------------------------

    def query(self, sql: str, *, limit: int = 10_000) -> tuple[list[str], list[tuple]]:
        """Run one user-supplied read-only query; returns (column names, at most ``limit`` rows).

        Only a single statement that DuckDB parses as SELECT (which includes WITH, VALUES,
        FROM-first, DESCRIBE, SHOW, SUMMARIZE) is accepted; anything else raises
        PermissionError. It runs on its own cursor inside a READ ONLY transaction that is rolled
        back, so even functions with side effects (e.g. ``nextval``) cannot change the data.
        Syntax and other query errors raise ValueError with DuckDB's message.
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        with self._lock:
            con = self._conn()
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as exc:
                raise ValueError(str(exc)) from None
            if not statements:
                raise ValueError("empty query")
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise PermissionError("only read-only SELECT queries are allowed")
            cur = con.cursor()
        body = statements[0].query.strip().rstrip(";").rstrip()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                cur.execute(f"SELECT * FROM (\n{body}\n) AS _workbench_query LIMIT {int(limit)}")
                rows = cur.fetchall()
            except duckdb.ParserException:
                # Not wrappable (e.g. a trailing comment after ';'): run it as is, still read-only.
                cur.execute("ROLLBACK")
                cur.execute("BEGIN TRANSACTION READ ONLY")
                cur.execute(statements[0].query)
                rows = cur.fetchmany(int(limit))
            columns = [d[0] for d in (cur.description or [])]
            return columns, rows
        except duckdb.TransactionException as exc:
            if "read-only" in str(exc) or "read only" in str(exc):
                raise PermissionError("only read-only SELECT queries are allowed") from None
            raise ValueError(str(exc)) from None
        except duckdb.Error as exc:
            raise ValueError(str(exc)) from None
        finally:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass
            cur.close()


def _int_or(value: Any, default: int | None = None) -> int | None:
    return int(value) if _is_number(value) and math.isfinite(float(value)) else default
