"""Experiments as records (migration 8): created with a description, listed with their runs'
counts and best run, and every name runs already use mapped onto one. A real store."""

from __future__ import annotations

import duckdb
import pytest

from tests.test_runs_table import _finished_run
from tests.utils.factories import mlp
from workbench.store import Store
from workbench.store.experiments import ExperimentExistsError
from workbench.store.migrations import MIGRATIONS, migrate


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "wb.duckdb") as s:
        yield s


def test_runs_experiments_become_records_on_migration(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, MIGRATIONS[:7])
    con.execute("INSERT INTO runs (run_id, model_id, state, epoch, epochs_total, hyperparams, "
                "dataset, target, created_at, updated_at, name, experiment) VALUES "
                "('r_a', 'm_1', 'succeeded', 1, 1, '{}', 'mnist', 'local', "
                "TIMESTAMP '2026-01-02', now(), 'a', 'sweep'), "
                "('r_b', 'm_1', 'failed', 1, 1, '{}', 'mnist', 'local', "
                "TIMESTAMP '2026-01-01', now(), 'b', 'sweep')")
    con.close()
    with Store(path) as store:
        (sweep,) = store.experiments()
        assert (sweep["name"], sweep["description"], sweep["runs"], sweep["failed"]) == (
            "sweep", "", 2, 1)
        assert sweep["created_at"].isoformat().startswith("2026-01-01")  # its first run's
        assert store.create_experiment("new")["runs"] == 0
        with pytest.raises(ExperimentExistsError):  # the migration made its record
            store.create_experiment("sweep")


def test_create_describe_and_list_with_counts_and_best_run(store):
    model = store.create_model(architecture=mlp(32), hyperparams={})
    empty = store.create_experiment(" lr sweep ", "Which learning rate?")
    assert (empty["name"], empty["description"], empty["runs"], empty["best"]) == (
        "lr sweep", "Which learning rate?", 0, None)
    with pytest.raises(ExperimentExistsError, match="exists already"):
        store.create_experiment("lr sweep")
    _finished_run(store, model_id=model.model_id, accuracies=(0.7, 0.8), name="low",
                  experiment="lr sweep")
    _finished_run(store, model_id=model.model_id, accuracies=(0.9, 0.85), name="high",
                  experiment="lr sweep")
    _finished_run(store, model_id=model.model_id, name="elsewhere", experiment="other")
    got = store.get_experiment("lr sweep")
    assert (got["runs"], got["succeeded"]) == (2, 2)
    assert got["best"] == {"metric": "val_accuracy", "value": 0.9,
                           "run_id": got["best"]["run_id"], "run_name": "high"}
    # A name only runs use is listed, and becomes a record when described.
    assert store.get_experiment("other")["description"] == ""
    described = store.describe_experiment("other", "runs moved here")
    assert described["description"] == "runs moved here" and described["runs"] == 1
    assert [e["name"] for e in store.experiments()] == ["other", "lr sweep"]  # newest run first
    assert store.describe_experiment("lr sweep", "")["description"] == ""


@pytest.mark.parametrize("call, error, message", [
    (lambda s: s.create_experiment("  "), ValueError, "name: 1 to 200"),
    (lambda s: s.create_experiment("x", "d" * 20_001), ValueError, "description: at most"),
    (lambda s: s.describe_experiment("nope", "x"), KeyError, "unknown experiment"),
])
def test_bad_experiments_say_why_and_store_nothing(store, call, error, message):
    with pytest.raises(error, match=message):
        call(store)
    assert store.experiments() == []
