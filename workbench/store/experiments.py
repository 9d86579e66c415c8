"""Experiments as records: a name, a description and when it was made. Runs name their
experiment (``runs.experiment``); an experiment some run names but nobody created (any run
before migration 8 made one for each, runs since may name new ones) is listed all the same,
with an empty description, and becomes a record when described. A mixin of
:class:`workbench.store.Store`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import duckdb

from workbench.store.runs import clean_name
from workbench.store.times import aware_opt, to_db, utcnow

MAX_DESCRIPTION_CHARS = 20_000
BEST_METRIC = "val_accuracy"  # what "best run" means in the list (its highest value)

# Records and the names runs use, each with its runs' counts and best run (by BEST_METRIC).
_LIST = """
WITH names AS (SELECT name FROM experiments UNION SELECT DISTINCT experiment FROM runs),
counts AS (
    SELECT experiment, count(*) AS runs,
           count(*) FILTER (WHERE state = 'running') AS running,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           max(created_at) AS last_run_at, min(created_at) AS first_run_at
    FROM runs GROUP BY experiment),
best AS (
    SELECT r.experiment, max(s.best_max) AS value, arg_max(r.run_id, s.best_max) AS run_id,
           arg_max(r.name, s.best_max) AS run_name
    FROM runs r JOIN run_summary s ON s.run_id = r.run_id AND s.name = ?
    WHERE s.best_max IS NOT NULL GROUP BY r.experiment)
SELECT n.name, coalesce(e.description, ''), coalesce(e.created_at, c.first_run_at),
       coalesce(c.runs, 0), coalesce(c.running, 0), coalesce(c.succeeded, 0),
       coalesce(c.failed, 0), c.last_run_at, b.value, b.run_id, b.run_name
FROM names n LEFT JOIN experiments e ON e.name = n.name
LEFT JOIN counts c ON c.experiment = n.name LEFT JOIN best b ON b.experiment = n.name
"""


def clean_description(value: str) -> str:
    text = str(value).strip()
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"description: at most {MAX_DESCRIPTION_CHARS} characters, "
                         f"got {len(text)}")
    return text


class ExperimentExistsError(ValueError):
    """``create_experiment`` of a name that is a record already."""


class ExperimentsMixin:
    """``create_experiment``, ``describe_experiment``, ``get_experiment``, ``experiments``."""

    if TYPE_CHECKING:
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    def create_experiment(self, name: str, description: str = "") -> dict[str, Any]:
        """A new experiment record; ExperimentExistsError if one has that name (a name only
        runs use so far becomes a record, keeping its runs)."""
        name, description = clean_name(name, "name"), clean_description(description)
        with self._tx() as con:
            if con.execute("SELECT 1 FROM experiments WHERE name = ?", [name]).fetchall():
                raise ExperimentExistsError(f"name: experiment {name!r} exists already")
            con.execute("INSERT INTO experiments (name, description, created_at) "
                        "VALUES (?, ?, ?)", [name, description, to_db(utcnow())])
        return self._one(name)

    def describe_experiment(self, name: str, description: str) -> dict[str, Any]:
        """Set an experiment's description; KeyError if no record or run has that name."""
        description = clean_description(description)
        with self._tx() as con:
            known = con.execute(
                "SELECT (SELECT count(*) FROM experiments WHERE name = ?), "
                "(SELECT min(created_at) FROM runs WHERE experiment = ?)", [name, name]
            ).fetchone()
            if known is None or (not known[0] and known[1] is None):
                raise KeyError(f"unknown experiment {name!r}")
            if known[0]:
                con.execute("UPDATE experiments SET description = ? WHERE name = ?",
                            [description, name])
            else:  # named by runs only: it becomes a record, made when its first run was
                con.execute("INSERT INTO experiments (name, description, created_at) "
                            "VALUES (?, ?, ?)", [name, description, known[1]])
        return self._one(name)

    def get_experiment(self, name: str) -> dict[str, Any] | None:
        found = self._experiments("WHERE n.name = ?", [name])
        return found[0] if found else None

    def experiments(self) -> list[dict[str, Any]]:
        """Every experiment (records and the names runs use), newest activity first: its
        description, runs, how many run / succeeded / failed, newest run and best run."""
        return self._experiments("", [])

    def _one(self, name: str) -> dict[str, Any]:
        found = self.get_experiment(name)
        assert found is not None
        return found

    def _experiments(self, where: str, params: list[Any]) -> list[dict[str, Any]]:
        rows = self._read(
            f"{_LIST} {where} ORDER BY coalesce(c.last_run_at, e.created_at) DESC, n.name",
            [BEST_METRIC, *params])
        return [{"name": r[0], "description": r[1], "created_at": aware_opt(r[2]),
                 "runs": int(r[3]), "running": int(r[4]), "succeeded": int(r[5]),
                 "failed": int(r[6]), "last_run_at": aware_opt(r[7]),
                 "best": None if r[8] is None else {
                     "metric": BEST_METRIC, "value": r[8], "run_id": r[9], "run_name": r[10]}}
                for r in rows]
