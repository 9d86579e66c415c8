"""Long-form metrics in the store: one row per (run, epoch, step, name, value, time).

Written by :mod:`workbench.store.events` (``epoch`` and ``step`` events); read here, both as a
run's full history and as the latest-epoch summary attached to every ``RunRecord``.
A mixin of :class:`workbench.store.Store` (it uses the store's ``_read`` helper).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from workbench.store.entities import MetricRecord
from workbench.store.times import aware

# The per-step training loss; kept out of a run's summary metrics.
STEP_LOSS = "step_loss"


class MetricsMixin:
    """Metric methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    def _latest_metrics(self, run_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """For each run, {name: value} of its highest epoch (step-level losses excluded): per
        name the latest value (by time, then step), reduced in SQL -- a tracked run has all its
        points in one epoch."""
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
            SELECT m.run_id, m.name,
                   arg_max(m.value, (m.time, coalesce(m.step, -9223372036854775808))) AS value,
                   max(m.time) AS last
            FROM metrics m JOIN latest l ON m.run_id = l.run_id AND m.epoch = l.epoch
            WHERE m.name <> ?
            GROUP BY m.run_id, m.name
            ORDER BY m.run_id, last, m.name
            """,
            [list(run_ids), STEP_LOSS, STEP_LOSS],
        )
        out: dict[str, dict[str, float]] = {}
        for run_id, name, value, _last in rows:
            out.setdefault(run_id, {})[name] = value
        return out

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
