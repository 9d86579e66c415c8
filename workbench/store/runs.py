"""Runs in the store: creation, paged listing, the state machine, and crash recovery.

A run moves queued -> running -> succeeded | failed | cancelled; a terminal run never moves
again (``_transition`` is the one place that enforces it, for ``set_run_state`` and for the
events of :mod:`workbench.store.events`). ``recover_interrupted`` marks runs a dead process left
running as failed when a store is opened. A mixin of :class:`workbench.store.Store`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import duckdb

from workbench import events as ev
from workbench.store.entities import RUN_STATES, TERMINAL_STATES, RunRecord
from workbench.store.models import require_model
from workbench.store.names import default_run_name
from workbench.store.summary import store_summary
from workbench.store.times import aware, aware_opt, utcnow
from workbench.store.values import dumps, loads, new_id

INTERRUPTED = "interrupted"
MAX_NAME_CHARS = 200
MAX_TAGS = 100
MAX_NOTES_CHARS = 20_000
# What a tag may not hold: the comma that separates tags typed as one line, control characters.
_BAD_TAG_CHAR = re.compile(r"[,\x00-\x1f\x7f-\x9f]")


def clean_name(value: str, field: str = "name") -> str:
    """A run or experiment name, stripped; ValueError naming ``field`` if empty or too long."""
    text = str(value).strip()
    if not text or len(text) > MAX_NAME_CHARS:
        raise ValueError(f"{field}: 1 to {MAX_NAME_CHARS} characters, got {len(text)}")
    return text


def clean_tag(tag: str, field: str = "tag") -> str:
    """One tag, stripped (inner spaces kept); ValueError naming ``field`` if empty, too long, or
    with a comma or control character. The API validates with this same function (pydantic's
    strip and Python's differ on U+001C-U+001F), so what it accepts the store always takes."""
    text = str(tag).strip()
    if not text or len(text) > MAX_NAME_CHARS or _BAD_TAG_CHAR.search(text):
        raise ValueError(f"{field}: 1 to {MAX_NAME_CHARS} characters without commas or line "
                         f"breaks, got {tag!r}")
    return text


def clean_tags(tags: Sequence[str]) -> list[str]:
    """Tags stripped (inner spaces kept: ``tag:"two words"`` filters on one), de-duplicated in
    order; ValueError for an empty or long tag, or one with a comma or line break (the CLI and
    the app take tags as a comma-separated line)."""
    if isinstance(tags, str):
        raise ValueError("tags: a list of strings, not one string")
    out: list[str] = []
    for i, tag in enumerate(tags):
        text = clean_tag(tag, field=f"tags[{i}]")
        if text not in out:
            out.append(text)
    if len(out) > MAX_TAGS:
        raise ValueError(f"tags: at most {MAX_TAGS}")
    return out

RUN_COLUMNS = (
    "run_id, model_id, state, error, epoch, epochs_total, hyperparams, dataset, target, "
    "device, param_id, created_at, started_at, finished_at, updated_at, name, experiment, "
    "tags, notes"
)
_INSERT = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({', '.join(['?'] * 19)})"


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


class RunsMixin:
    """Run methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection, MetricsMixin and EventsMixin
        _lock: threading.RLock

        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...
        def _latest_metrics(self, run_ids: Sequence[str]) -> dict[str, dict[str, float]]: ...

        def _append_event(
            self, con: duckdb.DuckDBPyConnection, run_id: str, type_: str, when: datetime,
            data: Any,
        ) -> int: ...

    @staticmethod
    def _run(row: tuple, metrics: dict[str, float] | None = None) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            model_id=row[1],
            state=row[2],
            error=row[3],
            epoch=row[4],
            epochs_total=row[5],
            hyperparams=loads(row[6]) or {},
            dataset=row[7],
            target=row[8],
            device=row[9],
            param_id=row[10],
            created_at=aware(row[11]),
            started_at=aware_opt(row[12]),
            finished_at=aware_opt(row[13]),
            updated_at=aware(row[14]),
            metrics=dict(metrics or {}),
            name=row[15] or "",
            experiment=row[16] or "default",
            tags=tuple(row[17] or ()),
            notes=row[18] or "",
        )

    def create_run(
        self,
        *,
        model_id: str,
        hyperparams: dict,
        epochs_total: int,
        dataset: str = "mnist",
        target: str = "local",
        name: str | None = None,
        experiment: str | None = None,
        tags: Sequence[str] = (),
        notes: str = "",
    ) -> RunRecord:
        """A queued run of a stored model (named ``adjective-noun-NN`` when ``name`` is None)."""
        run_id = new_id("r_")
        with self._tx() as con:
            require_model(con, model_id)
            return self._insert_run(
                con, run_id=run_id, model_id=model_id, state="queued", epochs_total=epochs_total,
                hyperparams=hyperparams, dataset=dataset, target=target, name=name,
                experiment=experiment, tags=tags, notes=notes)

    def create_external_run(self, *, hyperparams: dict, dataset: str = ev.EXTERNAL_TARGET,
                            name: str | None = None, experiment: str | None = None,
                            tags: Sequence[str] = (), notes: str = "") -> RunRecord:
        """A run trained outside workbench (``workbench.track``): no stored model (its model id
        and target are ``"external"``), created ``running``; its client logs metrics batches
        and ends it. ``recover_interrupted`` leaves such runs alone (their process is not the
        store's owner)."""
        external = ev.EXTERNAL_TARGET
        with self._tx() as con:
            return self._insert_run(
                con, run_id=new_id("r_"), model_id=external, state="running", epochs_total=0,
                hyperparams=hyperparams, dataset=dataset, target=external, name=name,
                experiment=experiment, tags=tags, notes=notes)

    def _insert_run(self, con: duckdb.DuckDBPyConnection, *, run_id: str, model_id: str,
                    state: str, epochs_total: int, hyperparams: dict, dataset: str, target: str,
                    name: str | None, experiment: str | None, tags: Sequence[str],
                    notes: str) -> RunRecord:
        now = utcnow()
        started = now if state == "running" else None
        name = clean_name(name) if name is not None else default_run_name(run_id)
        experiment = clean_name(experiment, "experiment") if experiment else "default"
        tag_list = clean_tags(tags)
        con.execute(_INSERT, [
            run_id, model_id, state, None, 0, int(epochs_total), dumps(hyperparams), dataset,
            target, None, None, now, started, None, now, name, experiment, tag_list, notes])
        return RunRecord(
            run_id=run_id, model_id=model_id, state=state, error=None, epoch=0,
            epochs_total=int(epochs_total), hyperparams=json.loads(dumps(hyperparams)),
            dataset=dataset, target=target, device=None, param_id=None, created_at=aware(now),
            started_at=aware_opt(started), finished_at=None, updated_at=aware(now), metrics={},
            name=name, experiment=experiment, tags=tuple(tag_list), notes=notes)

    def update_run(self, run_id: str, *, name: str | None = None,
                   experiment: str | None = None, tags: Sequence[str] | None = None,
                   notes: str | None = None) -> None:
        """Rename a run, move it to another experiment, replace its tags or notes (what is None
        stays). ValueError for an unknown run or a bad value, nothing changed then."""
        sets: list[str] = []
        params: list[Any] = []
        if name is not None:
            sets.append("name = ?")
            params.append(clean_name(name))
        if experiment is not None:
            sets.append("experiment = ?")
            params.append(clean_name(experiment, "experiment"))
        if tags is not None:
            sets.append("tags = ?")
            params.append(clean_tags(tags))
        if notes is not None:
            if len(notes) > MAX_NOTES_CHARS:
                raise ValueError(f"notes: at most {MAX_NOTES_CHARS} characters")
            sets.append("notes = ?")
            params.append(notes)
        with self._tx() as con:
            if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is None:
                raise ValueError(f"unknown run {run_id!r}")
            if sets:
                con.execute(f"UPDATE runs SET {', '.join(sets)}, updated_at = ? WHERE run_id = ?",
                            [*params, utcnow(), run_id])

    def run_state(self, run_id: str) -> tuple[str, str] | None:
        """(state, target) of a run, or None: a cheap check (no metrics summary)."""
        rows = self._read("SELECT state, target FROM runs WHERE run_id = ?", [run_id])
        return (rows[0][0], rows[0][1]) if rows else None

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id])
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
            f"SELECT {RUN_COLUMNS} FROM runs"
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

    # -- state machine ------------------------------------------------------------------------

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
        ending = state in TERMINAL_STATES and current not in TERMINAL_STATES
        if ending:
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
        if ending:  # its metrics are final now
            store_summary(con, run_id)

    def recover_interrupted(self, reason: str | None = None) -> list[str]:
        """Mark runs left 'running' (by a process that died) as failed, error ``reason``
        (default "interrupted"); their finished epochs stay.

        Queued runs are left alone (the server decides whether to start them), and so are
        external runs (``workbench.track``: their training process is not the owner, it goes on
        logging across an owner restart). A ``run.failed`` event is appended for each, so
        event-log readers see the run end. Returns the run ids.

        A run that resumes automatically (``auto_resume``: its own ``run.queued`` option, else
        the ``WORKBENCH_AUTO_RESUME`` setting; not distributed runs) becomes ``paused`` instead,
        with a ``run.paused`` event marked ``auto_resume``: the server resumes it from its last
        checkpoint (``Workbench.resume_queued``).
        """
        from workbench.config import get_settings

        default = get_settings().auto_resume
        with self._tx() as con:
            rows = con.execute(
                "SELECT r.run_id, r.epoch, r.target, (SELECT q.data->>'auto_resume' FROM events q "
                "  WHERE q.run_id = r.run_id AND q.type = 'run.queued' ORDER BY q.id DESC "
                "  LIMIT 1) FROM runs r WHERE r.state = 'running' AND r.target <> ? "
                "ORDER BY r.created_at, r.run_id",
                [ev.EXTERNAL_TARGET],
            ).fetchall()
            error = f"{INTERRUPTED}: {reason}" if reason else INTERRUPTED
            for run_id, epoch, target, flag in rows:
                chosen = default if flag in (None, "null") else flag == "true"
                if chosen and target != "distributed":
                    self._transition(con, run_id, "running", "paused")
                    self._append_event(con, run_id, ev.RUN_PAUSED, utcnow(),
                                       {"epoch": epoch, "auto_resume": True, "reason": error})
                    continue
                self._transition(con, run_id, "running", "failed", error=error)
                self._append_event(con, run_id, ev.RUN_FAILED, utcnow(), {"error": error})
        return [row[0] for row in rows]
