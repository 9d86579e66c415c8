"""Per-run metric summaries: for each (run, metric) the final value, the best (min and max),
the last epoch and the number of points -- what the runs table, its sort and the filter read.

A finished run's summary is stored in ``run_summary`` once, when it ends (its metrics never
change after), so the runs table over 10,000 runs reads 100,000 summary rows, not 10 M points.
Runs still queued or running are summarised from ``metrics`` when read (they are few).
"""

from __future__ import annotations

import duckdb

from workbench.store.metrics import STEP_LOSS

# Columns of run_summary, in order.
SUMMARY_COLUMNS = ("run_id", "name", "final", "best_min", "best_max", "final_epoch", "points")


def summary_select(where: str) -> str:
    """The summary of the metrics rows matching ``where`` (SQL over ``metrics``)."""
    return (
        "SELECT run_id, name, "
        "arg_max(value, (epoch, time, coalesce(step, -9223372036854775808))) AS final, "
        "min(value) AS best_min, max(value) AS best_max, max(epoch) AS final_epoch, "
        "count(*) AS points "
        f"FROM metrics WHERE ({where}) AND name <> '{STEP_LOSS}' "
        "AND value IS NOT NULL AND NOT isnan(value) GROUP BY run_id, name"
    )


def store_summary(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """(Re)write the stored summary of one run (inside the caller's transaction)."""
    con.execute("DELETE FROM run_summary WHERE run_id = ?", [run_id])
    con.execute(f"INSERT INTO run_summary {summary_select('run_id = ?')}", [run_id])


def backfill_summaries(con: duckdb.DuckDBPyConnection) -> None:
    """Summaries of every finished run (the migration that adds ``run_summary``)."""
    con.execute(
        "INSERT INTO run_summary "
        + summary_select("run_id IN (SELECT run_id FROM runs WHERE state IN "
                         "('succeeded', 'failed', 'cancelled'))")
    )
