"""The store's one DuckDB connection: opening (with the single-writer lock), transactions, reads.

Every entity mixin of :class:`workbench.store.Store` talks to DuckDB through ``_tx`` (one write
transaction, re-entrant) and ``_read`` (a locked read); this module owns the connection, the
re-entrant lock that lets the server apply events from several threads, migrations on open and
the recovery of runs a dead process left running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from workbench.config import get_settings
from workbench.store.migrations import migrate
from workbench.store.sandbox import DEFAULT_MEMORY_LIMIT, connection_config

MEMORY = ":memory:"

_S = TypeVar("_S", bound="StoreConnection")

# Paths open for writing in this process: a second writable Store on the same file shares
# DuckDB's database instance, and must not mark the first one's live runs as interrupted.
log = logging.getLogger(__name__)
_open_writers: dict[str, int] = {}
_open_writers_lock = threading.Lock()


class StoreLockedError(RuntimeError):
    """The DuckDB file is held by another process (DuckDB allows one writer process)."""

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        self.message = message
        super().__init__(message)


def _locked_message(path: Path, detail: str) -> str:
    return (
        f"another process owns the workbench store {path} (DuckDB allows a single writing "
        "process). Talk to that process instead: if it is the workbench server, set "
        "WORKBENCH_SERVER_URL (e.g. http://127.0.0.1:8000) or use the server's API; otherwise "
        f"stop it and try again. DuckDB said: {detail}"
    )


def connect(
    path: Path, read_only: bool, memory_limit: str = DEFAULT_MEMORY_LIMIT
) -> duckdb.DuckDBPyConnection:
    """Open ``path`` (or an in-memory database); StoreLockedError if another owner holds it.

    The connection gets the sandbox settings (no file, network or extension access, a memory
    limit, locked) from the start: the store only ever touches its own database file.
    """
    target = MEMORY if str(path) == MEMORY else str(path)
    try:
        return duckdb.connect(target, read_only=read_only, config=connection_config(memory_limit))
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
                "mode (read-only vs writable, or another memory limit); reuse that Store object. "
                f"DuckDB said: {text}",
            ) from exc
        raise


class StoreConnection:
    """Opening, closing and the transaction helpers of ``Store``. Thread-safe."""

    if TYPE_CHECKING:  # provided by RunsMixin and EventsMixin
        def recover_interrupted(self, reason: str | None = None) -> list[str]: ...
        def _flush_steps(self) -> None: ...

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False,
                 recovery_reason: str | None = None,
                 memory_limit: str = DEFAULT_MEMORY_LIMIT):
        """``recovery_reason``: why runs left 'running' by a dead process failed (the front
        door names the dead owner); default "interrupted". ``memory_limit``: DuckDB's, for the
        whole store, user queries included (every Store on one file must use the same)."""
        self.path = Path(get_settings().db_path if path is None else path)
        if str(self.path) != MEMORY:
            self.path = self.path.expanduser()
        self.read_only = read_only
        self.memory_limit = memory_limit  # DuckDB's, for the whole store (user queries included)
        self._lock = threading.RLock()
        self._next_event_id: int | None = None  # EventsMixin: the event log's id counter
        self._pending_steps: list[Any] = []  # EventsMixin: step events not written yet
        self._tx_depth = 0
        self._closed = False
        self._registered: str | None = None
        self.interrupted_on_open: list[str] = []

        in_memory = str(self.path) == MEMORY
        if read_only and not in_memory and not self.path.exists():
            raise FileNotFoundError(f"no workbench store at {self.path}")
        if not read_only and not in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)

        self._con: duckdb.DuckDBPyConnection | None = connect(self.path, read_only, memory_limit)
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
                    self.interrupted_on_open = self.recover_interrupted(recovery_reason)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._con is not None and self._pending_steps:
                try:
                    self._flush_steps()
                except duckdb.Error:
                    log.exception("could not write %d buffered step events",
                                  len(self._pending_steps))
            self._closed = True
            con, self._con = self._con, None
            try:
                if con is not None and not self.read_only and str(self.path) != MEMORY:
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

    def __enter__(self: _S) -> _S:
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

    def _conn(self, *, flush: bool = True) -> duckdb.DuckDBPyConnection:
        """The connection; ``flush``: buffered step events are written first, so every other
        read or write sees them (``EventsMixin._buffer_step``)."""
        if self._con is None:
            raise RuntimeError("the store is closed")
        if flush and self._pending_steps:
            self._flush_steps()
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
