"""The sweep spec's mapping onto the MLP spec, and its budgets (no server, no Optuna run)."""

from __future__ import annotations

import pytest

from workbench.spec import SubmitError
from workbench.sweeps.spec import (
    SweepSpec,
    check_spec,
    grid_size,
    trial_hyperparams,
    trial_layer_sizes,
)

BASE = [784, 128, 64, 10]


@pytest.mark.parametrize("params, layers", [
    ({}, BASE),
    ({"width": 32}, [784, 32, 32, 10]),
    ({"depth": 3}, [784, 128, 64, 64, 10]),
    ({"depth": 1, "width": 256}, [784, 256, 10]),
    ({"depth": 3, "width": 16, "width_2": 8}, [784, 16, 8, 16, 10]),
])
def test_depth_and_widths_map_onto_the_hidden_layers(params, layers):
    assert trial_layer_sizes(BASE, params) == layers


def test_hyperparameters_go_where_the_mlp_spec_has_them():
    base = {"epochs": 3, "optimizer": {"type": "sgd", "momentum": 0.9}}
    hp = trial_hyperparams(base, {"lr": 0.01, "optimizer": "adam", "batch_size": 32})
    assert hp == {"epochs": 3, "batch_size": 32,
                  "optimizer": {"type": "adam", "momentum": 0.9, "lr": 0.01}}
    assert base["optimizer"] == {"type": "sgd", "momentum": 0.9}  # the base is not changed


def test_budgets_grid_and_defaults():
    grid = SweepSpec.model_validate({"space": {"depth": {"low": 1, "high": 3},
                                               "optimizer": {"values": ["sgd", "adam"]},
                                               "lr": {"low": 0.01, "high": 0.03, "step": 0.01}},
                                     "sampler": {"type": "grid"}, "budget": {"trials": 100}})
    assert grid_size(grid.space) == 18 and grid.trial_budget() == 18
    plain = SweepSpec.model_validate({"space": {"lr": {"low": 1e-4, "high": 0.1}}})
    assert plain.trial_budget() == 10
    timed = SweepSpec.model_validate({"space": {"lr": {"low": 1e-4, "high": 0.1}},
                                      "budget": {"time_s": 60}})
    assert timed.trial_budget() is None
    assert plain.objective.resolved_direction == "maximize"
    assert SweepSpec.model_validate({"space": {"lr": {"low": 1e-4, "high": 0.1}},
                                     "objective": {"metric": "val_loss"}}
                                    ).objective.resolved_direction == "minimize"


def test_validation_data_is_needed_for_a_validation_objective():
    spec = SweepSpec.model_validate({"space": {"lr": {"low": 1e-4, "high": 0.1}},
                                     "hyperparams": {"train_split": 1.0}})
    with pytest.raises(SubmitError) as caught:
        check_spec(spec, input_size=784, classes=10)
    assert caught.value.field == "objective.metric"


def test_a_sweep_left_running_by_a_dead_owner_is_interrupted(tmp_path):
    """A journal whose sweep says "running" with nobody driving it (its owner was killed):
    the next owner shows it interrupted, its running trial failed."""
    from workbench.service import Workbench
    from workbench.store import Store
    from workbench.sweeps import study as studies

    spec = SweepSpec.model_validate({"space": {"lr": {"low": 1e-4, "high": 0.1}}})
    left = studies.create(tmp_path / "sweeps", "s_0123456789ab", spec, {
        "spec": spec.model_dump(mode="json", exclude_none=True), "experiment": "sweep-x",
        "state": "running", "created_at": "2026-01-01T00:00:00+00:00", "finished_at": None,
        "error": None})
    left.ask(studies.distributions(spec))
    service = Workbench(Store(tmp_path / "workbench.duckdb"), max_workers=0)
    try:
        sweep = service.sweeps.get("s_0123456789ab")
        assert (sweep["state"], sweep["error"]) == ("interrupted", "the owner that ran it stopped")
        assert [t["state"] for t in sweep["trials"]] == ["failed"]
        assert sweep["trials"][0]["error"] == "interrupted"
        assert [s["sweep_id"] for s in service.sweeps.list()] == ["s_0123456789ab"]
    finally:
        service.close()


SPACE = {"lr": {"low": 1e-3, "high": 0.5, "log": True}, "width": {"low": 32, "high": 512},
         "optimizer": {"values": ["sgd", "adam"]}}


@pytest.mark.parametrize("enqueue, field, fragment", [
    ([{"lr": 0.1, "width": 128}], "enqueue[0]", "missing optimizer"),
    ([{"lr": 0.1, "width": 128, "optimizer": "sgd", "depth": 2}], "enqueue[0]",
     "not searched: depth"),
    ([{"lr": 0.9, "width": 128, "optimizer": "sgd"}], "enqueue[0].lr", "0.001 to 0.5"),
    ([{"lr": 0.1, "width": 12.5, "optimizer": "sgd"}], "enqueue[0].width", "an integer"),
    ([{"lr": 0.1, "width": 64, "optimizer": "sgd"}, {"lr": 0.1, "width": 64,
                                                      "optimizer": "rmsprop"}],
     "enqueue[1].optimizer", "one of space.optimizer.values"),
    ([{"lr": 0.1, "width": 64, "optimizer": "sgd"}] * 3, "enqueue", "a budget of 2 trials"),
])
def test_enqueued_points_must_lie_in_the_space(enqueue, field, fragment):
    spec = SweepSpec.model_validate({"space": SPACE, "enqueue": enqueue,
                                     "budget": {"trials": 2}})
    with pytest.raises(SubmitError) as caught:
        check_spec(spec, input_size=784, classes=10)
    assert caught.value.field == field and fragment in str(caught.value), str(caught.value)


def test_enqueued_points_are_the_first_trials(tmp_path):
    """The point given first (e.g. today's default) is the sweep's first trial, exactly."""
    from workbench.sweeps import study as studies

    point = {"lr": 0.1, "width": 128, "optimizer": "sgd"}
    spec = SweepSpec.model_validate({"space": SPACE, "enqueue": [point],
                                     "sampler": {"type": "tpe", "seed": 0}})
    check_spec(spec, input_size=784, classes=10)
    study = studies.create(tmp_path / "sweeps", "s_0123456789ab", spec, {})
    first = study.ask(studies.distributions(spec))
    assert first.params == point
    assert study.ask(studies.distributions(spec)).params != point  # then the sampler's draws


def test_a_sweep_runs_its_enqueued_point_first_within_its_budget(tmp_path, monkeypatch):
    """Through the service and its local workers: the budget counts the enqueued point."""
    from workbench.config import get_settings
    from workbench.service import Workbench
    from workbench.store import Store

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()
    point = {"lr": 0.05, "width": 16}
    service = Workbench(Store(tmp_path / "workbench.duckdb"), max_workers=1)
    try:
        sweep = service.sweeps.create({
            "space": {"lr": {"low": 1e-3, "high": 0.1, "log": True},
                      "width": {"values": [16, 32]}},
            "hyperparams": {"epochs": 1, "batch_size": 64}, "limit": 200, "parallelism": 1,
            "budget": {"trials": 2}, "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "none"}, "enqueue": [point]})
        done = service.sweeps.wait(sweep["sweep_id"], timeout=300)
    finally:
        service.close()
        get_settings.cache_clear()
    assert done["state"] == "completed" and done["counts"]["total"] == 2, done
    assert done["trials"][0]["params"] == point and done["trials"][0]["state"] == "complete"
