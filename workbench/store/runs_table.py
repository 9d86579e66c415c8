"""The runs table: one rich row per run (organisation, state, key hyperparameters, an
architecture summary, best/final validation and test metrics, duration, throughput), filtered
by the filter syntax of :mod:`workbench.store.run_filter`, sorted by any column, paged.

One SQL query over ``runs``, ``models`` and the metric summaries of
:mod:`workbench.store.summary`; every value the user gives is a bound parameter, every column
name comes from ``COLUMNS``. A mixin of :class:`workbench.store.Store`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from workbench.store.run_filter import FilterError, compile_filter
from workbench.store.summary import summary_select
from workbench.store.times import aware_opt, utcnow


def _hp(path: str, config_key: str, cast: str | None = None) -> str:
    """A hyperparameter: the engine's ``$.path`` or a tracked run's ``$.config.<config_key>``."""
    expr = (f"coalesce(json_extract_string(r.hyperparams, '$.{path}'), "
            f"json_extract_string(r.hyperparams, '$.config.{config_key}'))")
    return f"TRY_CAST({expr} AS {cast})" if cast else expr


_ARCHITECTURE = (
    "concat_ws('-', json_extract_string(m.architecture, '$.input_size'), "
    "array_to_string(list_filter(json_extract_string(m.architecture, '$.layers[*].out'), "
    "lambda x: x IS NOT NULL), '-'))"
)

# column -> (SQL over runs r LEFT JOIN models m, kind for the filter)
BASE_COLUMNS: dict[str, tuple[str, str]] = {
    "run_id": ("r.run_id", "text"),
    "name": ("r.name", "text"),
    "experiment": ("r.experiment", "text"),
    "tags": ("r.tags", "list"),
    "notes": ("r.notes", "text"),
    "state": ("r.state", "text"),
    "error": ("r.error", "text"),
    "model_id": ("r.model_id", "text"),
    "model": ("coalesce(m.name, r.model_id)", "text"),
    "dataset": ("r.dataset", "text"),
    "target": ("r.target", "text"),
    "device": ("r.device", "text"),
    "optimizer": (_hp("optimizer.type", "optimizer"), "text"),
    "lr": (_hp("optimizer.lr", "lr", "DOUBLE"), "number"),
    "batch_size": (_hp("batch_size", "batch_size", "BIGINT"), "number"),
    "epochs": ("r.epochs_total", "number"),
    "epoch": ("r.epoch", "number"),
    "architecture": (_ARCHITECTURE, "text"),
    "created_at": ("r.created_at", "time"),
    "started_at": ("r.started_at", "time"),
    "finished_at": ("r.finished_at", "time"),
    "duration_s": ("epoch(coalesce(r.finished_at, {now}) - r.started_at)", "number"),
    "param_id": ("r.param_id", "text"),
}
# column -> (metric name, summary column)
METRIC_COLUMNS: dict[str, tuple[str, str]] = {
    "best_val_accuracy": ("val_accuracy", "best_max"),
    "final_val_accuracy": ("val_accuracy", "final"),
    "best_val_loss": ("val_loss", "best_min"),
    "final_val_loss": ("val_loss", "final"),
    "final_train_loss": ("train_loss", "final"),
    "test_accuracy": ("test_accuracy", "final"),
    "test_loss": ("test_loss", "final"),
    "samples_per_s": ("samples_per_s", "final"),
    "total_tflops": ("total_tflops", "final"),
}
COLUMNS: tuple[str, ...] = (*BASE_COLUMNS, *METRIC_COLUMNS)
DEFAULT_COLUMNS: tuple[str, ...] = (
    "run_id", "name", "experiment", "tags", "state", "error", "model", "dataset", "target",
    "device", "optimizer", "lr", "batch_size", "epochs", "architecture", "best_val_accuracy",
    "final_val_accuracy", "final_val_loss", "test_accuracy", "duration_s", "samples_per_s",
    "created_at",
)
TIME_COLUMNS = frozenset({"created_at", "started_at", "finished_at"})
MAX_LIMIT = 100_000


@dataclass(frozen=True)
class RunsTable:
    """A page of the runs table: rows as {column: value}, and how many rows match in all."""

    columns: list[str]
    rows: list[dict[str, Any]]
    total: int
    sort: str
    filter: str | None = None
    metric_names: list[str] = field(default_factory=list)


def parse_sort(sort: str) -> tuple[str, str]:
    """``"-created_at"`` -> ("created_at", "DESC"); ValueError naming the allowed columns."""
    column = sort.strip()
    direction = "ASC"
    if column.startswith("-"):
        column, direction = column[1:], "DESC"
    elif column.startswith("+"):
        column = column[1:]
    if column not in COLUMNS:
        raise ValueError(f"sort: unknown column {column!r}; one of {', '.join(COLUMNS)}")
    return column, direction


def check_columns(columns: Sequence[str]) -> list[str]:
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"columns: unknown {', '.join(map(repr, unknown))}; "
                         f"one of {', '.join(COLUMNS)}")
    return list(dict.fromkeys(columns)) or list(DEFAULT_COLUMNS)


class RunsTableMixin:
    """``Store.runs_table``, ``Store.metric_names`` and ``Store.tags``."""

    if TYPE_CHECKING:  # provided by StoreConnection
        _lock: threading.RLock

        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...
        def _conn(self) -> duckdb.DuckDBPyConnection: ...

    def metric_names(self) -> list[str]:
        """Every metric name any run has (finished runs' summaries and live runs' points)."""
        rows = self._read(
            "SELECT DISTINCT name FROM run_summary UNION SELECT DISTINCT m.name FROM metrics m "
            "JOIN runs r ON m.run_id = r.run_id AND r.state IN ('queued', 'running') "
            "ORDER BY 1")
        return [r[0] for r in rows if r[0] != "step_loss"]

    def runs_table(
        self,
        *,
        columns: Sequence[str] = DEFAULT_COLUMNS,
        filter: str | None = None,  # noqa: A002 - the user-facing name
        sort: str = "-created_at",
        limit: int = 100,
        offset: int = 0,
        run_ids: Sequence[str] | None = None,
        also: Sequence[str] = (),
    ) -> RunsTable:
        """Rows of the runs table, newest first unless ``sort`` says otherwise
        (``"val_accuracy"``, ``"-duration_s"``), at most ``limit`` from ``offset``; ``filter``
        in the syntax of :mod:`workbench.store.run_filter` (FilterError, a ValueError, with a
        position when it is not valid); ``also``: more filters ANDed with it (a face's own
        conditions, kept apart so an error's position is in the user's text); ``run_ids``
        keeps only those runs."""
        chosen = check_columns(columns)
        sort_column, direction = parse_sort(sort)
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: 1 to {MAX_LIMIT}, got {limit}")
        if offset < 0:
            raise ValueError(f"offset: >= 0, got {offset}")
        now = f"TIMESTAMP '{utcnow().isoformat(sep=' ')}'"
        with self._lock:
            live = [r[0] for r in self._read(
                "SELECT run_id FROM runs WHERE list_contains(?::VARCHAR[], state)",
                [["queued", "running"]])]
            texts = [t for t in (filter, *also) if t is not None and t.strip()]
            known_metrics = set(self.metric_names()) if texts else set()
            where: list[str] = ["TRUE"]
            params: list[Any] = []
            for text in texts:
                condition, condition_params = compile_filter(
                    text, _resolver(known_metrics, now))
                where.append(condition)
                params += condition_params
            sql, head_params = _table_sql(live, now, None if run_ids is None else list(run_ids))
            listed = ", ".join(f"t.{c}" for c in chosen)
            sort_expr = f"t.{sort_column}"
            query = (
                f"{sql} SELECT {listed}, count(*) OVER () AS _total FROM t "
                f"WHERE {' AND '.join(where)} "
                f"ORDER BY {sort_expr} {direction} NULLS LAST, t.run_id {direction} "
                "LIMIT ? OFFSET ?")
            try:
                result = self._conn().execute(query, [*head_params, *params, limit, offset])
                rows = result.fetchall()
            except duckdb.Error as exc:  # e.g. a value that cannot be cast
                raise ValueError(f"filter: {exc}") from None
        total = int(rows[0][-1]) if rows else 0
        out = []
        for row in rows:
            record = dict(zip(chosen, row[:-1]))
            for column in TIME_COLUMNS & record.keys():
                record[column] = aware_opt(record[column])
            if "tags" in record:
                record["tags"] = list(record["tags"] or [])
            out.append(record)
        return RunsTable(columns=chosen, rows=out, total=total, sort=sort, filter=filter)

    def tags(self) -> list[tuple[str, int]]:
        """Every tag with how many runs carry it, most used first."""
        rows = self._read("SELECT tag, count(*) FROM (SELECT unnest(tags) AS tag FROM runs) "
                          "GROUP BY tag ORDER BY count(*) DESC, tag")
        return [(r[0], int(r[1])) for r in rows]


def _table_sql(live: list[str], now: str, run_ids: list[str] | None
               ) -> tuple[str, list[Any]]:
    """The WITH clause defining ``t``, the runs table (of ``run_ids`` only, when given: read
    early, so comparing 10 runs does not build 10,000 rows), and its parameters."""
    params: list[Any] = []
    only = ""
    if run_ids is not None:
        only = " AND list_contains(?::VARCHAR[], {column})"
    summary = "SELECT * FROM run_summary"
    if live:  # runs still training: summarised from their points now
        summary += f" UNION ALL {summary_select('list_contains(?::VARCHAR[], run_id)')}"
        params.append(live)
    pivots = ", ".join(
        f"max({column}) FILTER (WHERE name = '{metric}') AS {name}"
        for name, (metric, column) in METRIC_COLUMNS.items())
    metric_names = sorted({metric for metric, _ in METRIC_COLUMNS.values()})
    bases = ", ".join(f"{expr.format(now=now)} AS {name}"
                      for name, (expr, _) in BASE_COLUMNS.items())
    metric_list = ", ".join(f"p.{name}" for name in METRIC_COLUMNS)
    sql = (
        f"WITH s AS ({summary}), "
        f"p AS (SELECT run_id, {pivots} FROM s "
        f"WHERE list_contains({_sql_list(metric_names)}, name)"
        f"{only.format(column='run_id')} GROUP BY run_id), "
        f"t AS (SELECT {bases}, {metric_list}, r.hyperparams AS _hyperparams "
        "FROM runs r LEFT JOIN models m ON m.model_id = r.model_id "
        f"LEFT JOIN p ON p.run_id = r.run_id WHERE TRUE{only.format(column='r.run_id')})"
    )
    if run_ids is not None:
        params += [run_ids, run_ids]
    return sql, params


def _sql_list(names: list[str]) -> str:
    return "[" + ", ".join("'" + n.replace("'", "''") + "'" for n in names) + "]"


def _resolver(known_metrics: set[str], now: str):
    """Filter fields: a table column, ``hp.<path>`` / ``config.<path>`` (hyperparameters), a
    metric's final value by name, or ``best.<metric>`` / ``min.`` / ``max.<metric>``."""
    def resolve(parts: list[str], position: int) -> tuple[str, list[Any], str]:
        name = ".".join(parts)
        lowered = name.lower()
        if len(parts) == 1 and lowered in BASE_COLUMNS:
            return f"t.{lowered}", [], BASE_COLUMNS[lowered][1]
        if len(parts) == 1 and lowered in METRIC_COLUMNS:
            return f"t.{lowered}", [], "number"
        if parts[0].lower() in ("hp", "config") and len(parts) > 1:
            path = "$." + ("config." if parts[0].lower() == "config" else "") + ".".join(parts[1:])
            return "json_extract_string(t._hyperparams, ?)", [path], "any"
        aggregate = "final"
        metric = name
        if len(parts) > 1 and parts[0].lower() in ("best", "min", "max", "final"):
            metric = ".".join(parts[1:])
            kind = parts[0].lower()
            aggregate = {"min": "best_min", "max": "best_max", "final": "final"}.get(
                kind, "best_min" if "loss" in metric else "best_max")
        if metric in known_metrics:
            return (f"(SELECT {aggregate} FROM s WHERE s.run_id = t.run_id AND s.name = ?)",
                    [metric], "number")
        raise FilterError(
            f"unknown column or metric {name!r}; columns: {', '.join(COLUMNS)}; metrics: "
            f"{', '.join(sorted(known_metrics)) or 'none yet'}; hyperparameters: hp.<path>",
            position)
    return resolve

