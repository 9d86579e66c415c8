"""Ad-hoc SQL: the one user-supplied, read-only query behind ``workbench sql``, the app's SQL
box and ``POST /api/v1/sql``, run inside the sandbox of :mod:`workbench.store.sandbox`.

A mixin of :class:`workbench.store.Store`. The query runs on its own cursor (a slow query does
not hold the store's lock), in a READ ONLY transaction that is rolled back, under a time limit.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import duckdb

from workbench.store import sandbox

DEFAULT_TIMEOUT_S = 5.0
_READ_ONLY = "only read-only SELECT queries are allowed"


class QueryTimeoutError(TimeoutError, ValueError):
    """The query ran past its time limit and was interrupted (also a ValueError, so callers
    that report query errors report this one too)."""


def _strip_tail(text: str) -> str:
    """``text`` without trailing semicolons and comments (so it can be wrapped)."""
    try:
        tokens = duckdb.tokenize(text)
    except duckdb.Error:  # pragma: no cover - it parsed already
        return text.strip()
    end = len(text)
    for position, kind in reversed(tokens):
        is_semicolon = kind == duckdb.token_type.operator and text[position] == ";"
        if kind != duckdb.token_type.comment and not is_semicolon:
            break
        end = position
    return text[:end].strip()


class SqlMixin:
    """``Store.query``."""

    if TYPE_CHECKING:  # provided by StoreConnection
        _lock: threading.RLock
        memory_limit: str

        def _conn(self) -> duckdb.DuckDBPyConnection: ...

    def query(
        self, sql: str, *, limit: int = 10_000, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> tuple[list[str], list[tuple]]:
        """Run one user-supplied read-only query; returns (column names, at most ``limit`` rows).

        Only a single SELECT (WITH, VALUES, FROM-first, DESCRIBE and SUMMARIZE of a view
        included) over the views of :data:`workbench.store.sandbox.VIEWS` is accepted: anything
        else -- another statement, an internal table, a file, a table function such as
        ``read_text``, a function such as ``getenv`` -- raises PermissionError saying why.
        Syntax and other query errors raise ValueError with DuckDB's message; a query still
        running after ``timeout_s`` seconds is interrupted (QueryTimeoutError, a ValueError).
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        with self._lock:
            con = self._conn()
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as exc:
                raise ValueError(str(exc)) from None
            if not statements:
                raise ValueError("empty query")
            if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
                raise PermissionError(_READ_ONLY)
            cur = con.cursor()
        body = _strip_tail(statements[0].query)
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            with_views, names = sandbox.prelude(cur)
            wrapped = f"{with_views}SELECT * FROM (\n{body}\n) AS _workbench_query LIMIT {int(limit)}"
            sandbox.check_wrapped(sandbox.parse(cur, wrapped), names)
            return self._run_timed(cur, wrapped, timeout_s)
        except duckdb.TransactionException as exc:
            if "read-only" in str(exc) or "read only" in str(exc):
                raise PermissionError(_READ_ONLY) from None
            raise ValueError(str(exc)) from None
        except duckdb.OutOfMemoryException as exc:
            raise ValueError(
                f"query ran out of memory (the store's limit is {self.memory_limit}): {exc}"
            ) from None
        except duckdb.Error as exc:
            raise ValueError(str(exc)) from None
        finally:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass
            cur.close()

    @staticmethod
    def _run_timed(
        cur: duckdb.DuckDBPyConnection, sql: str, timeout_s: float
    ) -> tuple[list[str], list[tuple]]:
        """Execute and fetch; a timer interrupts the cursor after ``timeout_s`` seconds."""
        guard = threading.Lock()
        state = {"done": False, "fired": False}

        def interrupt() -> None:
            with guard:
                if not state["done"]:
                    state["fired"] = True
                    cur.interrupt()

        timer = threading.Timer(timeout_s, interrupt)
        timer.daemon = True
        timer.start()
        try:
            cur.execute(sql)
            rows = cur.fetchall()
            columns = [d[0] for d in (cur.description or [])]
        except duckdb.InterruptException:
            if state["fired"]:
                raise QueryTimeoutError(f"query interrupted after {timeout_s:g} s") from None
            raise
        finally:
            with guard:
                state["done"] = True
            timer.cancel()
        return columns, rows
