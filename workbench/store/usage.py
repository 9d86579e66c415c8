"""Read-only aggregates for the native API's analytics: usage per API key, task counts, metric
series. Keyword-only functions over a :class:`~workbench.store.Store` (SQL stays in this
package).

Who started a run is the ``run.owner`` event logged on it (``{"key_id": ...}``); the work a run
did comes from its ``run.started`` event (``n_train``, FLOPs per sample) and its epoch metrics:
samples = n_train x epochs run, TFLOP = samples x (forward + backward FLOPs per sample) / 1e12,
compute seconds = the sum of ``epoch_time_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from workbench.store.times import to_db

if TYPE_CHECKING:
    from workbench.store.duck import Store

OWNER_EVENT = "run.owner"


def _naive(when: datetime | None) -> datetime:
    return datetime(1970, 1, 1) if when is None else to_db(when)


@dataclass(frozen=True)
class KeyUsage:
    key_id: str | None  # None: runs started without a recorded key (CLI, MNIST MLP API)
    tasks: int
    completed: int
    compute_seconds: float
    samples: int
    tflop: float


def usage_by_key(store: Store, *, since: datetime | None = None) -> list[KeyUsage]:
    """Work done by runs created at or after ``since``, grouped by the key that started them."""
    rows = store._read(
        """
        WITH owners AS (
            SELECT run_id, arg_min(json_extract_string(data, '$.key_id'), id) AS key_id
            FROM events WHERE type = ? GROUP BY run_id
        ),
        started AS (
            SELECT run_id,
                   arg_max(TRY_CAST(json_extract(data, '$.n_train') AS DOUBLE), id) AS n_train,
                   arg_max(TRY_CAST(json_extract(data, '$.flops_per_sample.forward') AS DOUBLE)
                           + TRY_CAST(json_extract(data, '$.flops_per_sample.backward') AS DOUBLE),
                           id) AS flops
            FROM events WHERE type = 'run.started' GROUP BY run_id
        ),
        epochs AS (
            SELECT run_id, count(DISTINCT epoch) AS epochs, sum(value) AS seconds
            FROM metrics WHERE name = 'epoch_time_s' GROUP BY run_id
        )
        SELECT o.key_id, count(*), count(*) FILTER (WHERE r.state = 'succeeded'),
               coalesce(sum(e.seconds), 0),
               coalesce(sum(s.n_train * e.epochs), 0),
               coalesce(sum(s.n_train * e.epochs * s.flops), 0) / 1e12
        FROM runs r
        LEFT JOIN owners o USING (run_id)
        LEFT JOIN started s USING (run_id)
        LEFT JOIN epochs e USING (run_id)
        WHERE r.created_at >= ?
        GROUP BY o.key_id ORDER BY o.key_id NULLS LAST
        """,
        [OWNER_EVENT, _naive(since)],
    )
    return [KeyUsage(r[0], int(r[1]), int(r[2]), float(r[3]), int(r[4]), float(r[5]))
            for r in rows]


def run_counts(store: Store, *, since: datetime | None = None) -> dict[str, Any]:
    """``{"by_state": {...}, "total", "created_since", "compute_seconds",
    "mean_duration_s"}`` (durations of succeeded runs)."""
    by_state = dict(store._read("SELECT state, count(*) FROM runs GROUP BY state"))
    since_n, mean_duration = store._read(
        """
        SELECT count(*) FILTER (WHERE created_at >= ?),
               avg(epoch_ms(finished_at - started_at) / 1000.0)
                   FILTER (WHERE state = 'succeeded' AND started_at IS NOT NULL)
        FROM runs
        """,
        [_naive(since)],
    )[0]
    seconds = store._read("SELECT coalesce(sum(value), 0) FROM metrics "
                          "WHERE name = 'epoch_time_s'")[0][0]
    return {"by_state": {k: int(v) for k, v in by_state.items()},
            "total": int(sum(by_state.values())), "created_since": int(since_n or 0),
            "compute_seconds": float(seconds or 0.0),
            "mean_duration_s": None if mean_duration is None else float(mean_duration)}


def metric_points(store: Store, *, name: str, since: datetime | None = None,
                  limit: int = 10_000) -> list[tuple[str, int, float | None, datetime]]:
    """``(run_id, epoch, value, time)`` of an epoch metric recorded since ``since``, oldest
    first, at most ``limit`` (the newest are kept)."""
    rows = store._read(
        """
        SELECT run_id, epoch, value, time FROM metrics
        WHERE name = ? AND time >= ? ORDER BY time DESC, run_id LIMIT ?
        """,
        [name, _naive(since), int(limit)],
    )
    return [(r[0], int(r[1]), r[2], r[3].replace(tzinfo=timezone.utc)) for r in reversed(rows)]


def run_owners(store: Store) -> dict[str, str]:
    """``{run_id: key_id}``: the key that started each run (its first ``run.owner`` event)."""
    rows = store._read("SELECT run_id, arg_min(json_extract_string(data, '$.key_id'), id) "
                       "FROM events WHERE type = ? GROUP BY run_id", [OWNER_EVENT])
    return {r[0]: r[1] for r in rows if r[1] is not None}


def node_owner(store: Store, node_id: str) -> str | None:
    """The key that registered a node (None for nodes registered before owners were kept)."""
    rows = store._read("SELECT owner_key_id FROM nodes WHERE node_id = ?", [node_id])
    return rows[0][0] if rows else None


def set_node_owner(store: Store, node_id: str, key_id: str) -> None:
    with store._tx() as con:
        con.execute("UPDATE nodes SET owner_key_id = ? WHERE node_id = ?", [key_id, node_id])
