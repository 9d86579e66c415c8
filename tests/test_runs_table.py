"""Run organisation (names, experiments, tags, notes) and the runs table, on a real store."""

from __future__ import annotations

import duckdb
import pytest

from tests.utils.factories import mlp
from workbench import events as ev
from workbench.store import FilterError, Store
from workbench.store.migrations import MIGRATIONS, migrate
from workbench.store.names import default_run_name


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "wb.duckdb") as s:
        yield s


def _finished_run(store: Store, *, model_id: str, optimizer: str = "adam", lr: float = 1e-3,
                  accuracies=(0.8, 0.9), test_accuracy: float | None = 0.88, state="succeeded",
                  **kw):
    hp = {"epochs": len(accuracies), "batch_size": 64, "optimizer": {"type": optimizer, "lr": lr}}
    run = store.create_run(model_id=model_id, hyperparams=hp, epochs_total=len(accuracies), **kw)
    store.apply_event(ev.make_event(ev.RUN_STARTED, run.run_id, device="cpu",
                                    epochs_total=len(accuracies)))
    for epoch, acc in enumerate(accuracies, start=1):
        store.apply_event(ev.make_event(ev.EPOCH, run.run_id, epoch=epoch, val_accuracy=acc,
                                        val_loss=1 - acc, train_loss=1.1 - acc,
                                        samples_per_s=1000.0 * epoch))
    if test_accuracy is not None:
        store.apply_event(ev.make_event(ev.EVALUATION, run.run_id, epoch=len(accuracies),
                                        test_accuracy=test_accuracy))
    if state == "succeeded":
        store.apply_event(ev.make_event(ev.RUN_COMPLETED, run.run_id))
    elif state == "failed":
        store.apply_event(ev.make_event(ev.RUN_FAILED, run.run_id, error="diverged: loss is nan"))
    return run


def test_default_names_are_readable_and_stable(store):
    model = store.create_model(architecture=mlp(32), hyperparams={}, name="fashion-128")
    run = store.create_run(model_id=model.model_id, hyperparams={}, epochs_total=1)
    adjective, noun, digits = run.name.split("-")
    assert adjective.isalpha() and noun.isalpha() and len(digits) == 2 and digits.isdigit()
    assert run.name == default_run_name(run.run_id) == store.get_run(run.run_id).name
    named = store.create_run(model_id=model.model_id, hyperparams={}, epochs_total=1,
                             name=" baseline ", experiment="fashion", tags=["a", "b", "a"])
    got = store.get_run(named.run_id)
    assert (got.name, got.experiment, got.tags) == ("baseline", "fashion", ("a", "b"))


def test_rename_tags_notes_experiment_and_bad_values_change_nothing(store):
    model = store.create_model(architecture=mlp(32), hyperparams={})
    run = store.create_run(model_id=model.model_id, hyperparams={}, epochs_total=1)
    store.update_run(run.run_id, name="wide", experiment="sweep", tags=["x"], notes="try 2")
    got = store.get_run(run.run_id)
    assert (got.name, got.experiment, got.tags, got.notes) == ("wide", "sweep", ("x",), "try 2")
    for bad, message in (({"name": "  "}, "name: 1 to 200"),
                         ({"tags": ["ok", "a,b"]}, r"tags\[1\]: .* without commas"),
                         ({"tags": ["line\nbreak"]}, r"tags\[0\]"),
                         ({"tags": "x"}, "a list of strings"),
                         ({"experiment": "e" * 201}, "experiment: 1 to 200")):
        with pytest.raises(ValueError, match=message):
            store.update_run(run.run_id, **bad)
    assert store.get_run(run.run_id).name == "wide"
    with pytest.raises(ValueError, match="unknown run"):
        store.update_run("r_nope", name="x")
    assert store.experiments()[0]["name"] == "sweep"
    assert store.tags() == [("x", 1)]


def test_runs_table_rows_newest_first_with_hyperparams_and_metrics(store):
    model = store.create_model(architecture=mlp(64), hyperparams={}, name="fashion-128")
    old = _finished_run(store, model_id=model.model_id, optimizer="sgd", lr=0.1,
                        accuracies=(0.7, 0.75), name="old")
    new = _finished_run(store, model_id=model.model_id, accuracies=(0.8, 0.95, 0.9),
                        name="new", tags=["baseline"])
    failed = _finished_run(store, model_id=model.model_id, state="failed", test_accuracy=None,
                           name="bad")
    table = store.runs_table()
    assert [r["name"] for r in table.rows] == ["bad", "new", "old"] and table.total == 3
    row = table.rows[1]
    assert row["run_id"] == new.run_id and row["model"] == "fashion-128"
    assert (row["optimizer"], row["lr"], row["batch_size"], row["epochs"]) == ("adam", 1e-3, 64, 3)
    assert row["architecture"] == "784-64-10" and row["tags"] == ["baseline"]
    assert (row["best_val_accuracy"], row["final_val_accuracy"], row["test_accuracy"]) == (
        0.95, 0.9, 0.88)
    assert row["samples_per_s"] == 3000.0 and row["duration_s"] >= 0
    assert table.rows[0]["error"] == "diverged: loss is nan"
    assert [r["run_id"] for r in store.runs_table(sort="best_val_accuracy").rows] == [
        old.run_id, failed.run_id, new.run_id]
    picked = store.runs_table(columns=["name", "lr"], sort="-lr", limit=1)
    assert picked.rows == [{"name": "old", "lr": 0.1}] and picked.total == 3


def test_running_runs_are_summarised_live(store):
    model = store.create_model(architecture=mlp(32), hyperparams={})
    run = store.create_run(model_id=model.model_id, hyperparams={}, epochs_total=3)
    store.apply_event(ev.make_event(ev.RUN_STARTED, run.run_id, epochs_total=3))
    store.apply_event(ev.make_event(ev.EPOCH, run.run_id, epoch=1, val_accuracy=0.5))
    assert store.runs_table().rows[0]["final_val_accuracy"] == 0.5
    store.apply_event(ev.make_event(ev.EPOCH, run.run_id, epoch=2, val_accuracy=0.6))
    assert store.runs_table(filter="val_accuracy >= 0.6").total == 1


@pytest.mark.parametrize("text, names", [
    ("val_accuracy > 0.85 and optimizer = adam and tag:baseline", ["new"]),
    ("optimizer = sgd or state = failed", ["bad", "old"]),
    ("not tag:baseline", ["bad", "old"]),
    ("best.val_loss < 0.08", ["new"]),
    ("max.val_accuracy > 0.9", ["new"]),
    ("hp.optimizer.lr = 0.1", ["old"]),
    ("name ~ E and architecture = 784-64-10", ["new"]),
    ("error is not null", ["bad"]),
    ("lr in (0.1, 0.001)", ["bad", "new", "old"]),
    ("experiment:default and test_accuracy > 0.5", ["new", "old"]),
    ('tag:"two words"', ["new"]),
    ("tag:'TWO words' or tags ~ 'o wor'", ["new"]),
    ('not tag:"two"', ["bad", "new", "old"]),
])
def test_filter_over_the_table(store, text, names):
    model = store.create_model(architecture=mlp(64), hyperparams={})
    _finished_run(store, model_id=model.model_id, optimizer="sgd", lr=0.1, name="old")
    _finished_run(store, model_id=model.model_id, accuracies=(0.8, 0.95), name="new",
                  tags=["baseline", "two words"])
    _finished_run(store, model_id=model.model_id, state="failed", test_accuracy=None, name="bad")
    assert sorted(r["name"] for r in store.runs_table(filter=text).rows) == names


def test_bad_filter_sort_or_columns_say_what_is_wrong(store):
    with pytest.raises(FilterError) as info:
        store.runs_table(filter="val_acuracy > 1")
    assert info.value.position == 0 and "unknown column or metric 'val_acuracy'" in str(info.value)
    with pytest.raises(ValueError, match="sort: unknown column 'nope'"):
        store.runs_table(sort="-nope")
    with pytest.raises(ValueError, match="columns: unknown 'x'"):
        store.runs_table(columns=["name", "x"])
    with pytest.raises(ValueError, match="limit"):
        store.runs_table(limit=0)


def test_migration_names_old_runs_and_summarises_finished_ones(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, MIGRATIONS[:4])
    con.execute("INSERT INTO runs (run_id, model_id, state, epoch, epochs_total, hyperparams, "
                "dataset, target, created_at, updated_at) VALUES "
                "('r_a', 'm_1', 'succeeded', 1, 1, '{}', 'mnist', 'local', now(), now()), "
                "('r_b', 'external', 'running', 0, 0, "
                "'{\"name\": \"cnn\", \"experiment\": \"vision\", \"tags\": [\"t1\"]}', "
                "'external', 'external', now(), now())")
    con.execute("INSERT INTO metrics VALUES ('r_a', 1, NULL, 'val_accuracy', 0.5, now()), "
                "('r_a', 1, NULL, 'step_loss', 9.0, now())")
    con.close()
    with Store(path) as store:
        a, b = store.get_run("r_a"), store.get_run("r_b")
        assert a.name == default_run_name("r_a") and a.experiment == "default"
        assert (b.name, b.experiment, b.tags) == ("cnn", "vision", ("t1",))
        assert store.query("SELECT run_id, name, final FROM run_summary")[1] == [
            ("r_a", "val_accuracy", 0.5)]
