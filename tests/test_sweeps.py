"""Sweeps (workbench.sweeps) through a real server: a seeded TPE sweep of six trials, two at a
time on local workers, started with ``workbench sweep``; the median pruner stops trials worse
than the finished ones after epoch 1; every trial is a run of the sweep's experiment. Bad specs
are 422 naming the field in both API families; the notebook starts, lists and cancels one.

Pruning is deterministic where the test looks: TPE's first ten trials are seeded random draws;
the pruner waits for two complete trials (``n_startup_trials: 2``), so trials 0 and 1, which
run together, always complete (under load one may finish before the other reports an epoch,
so ``1`` would make trial 1's fate a race); trial 5 starts only after four have ended, and its
learning rate (2.6e-5) cannot reach the finished trials' epoch-1 accuracy. Trials 2-4 may go
either way, depending on which trials had finished when they reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.utils.server import start_server

# Six trials of worker processes: generous on a loaded machine (each run imports torch).
pytestmark = pytest.mark.timeout(1200)

SPEC = {
    "name": "tiny",
    "space": {"lr": {"low": 1e-5, "high": 0.5, "log": True}, "width": {"values": [16, 32]}},
    "hyperparams": {"epochs": 2, "batch_size": 64, "optimizer": {"type": "adam"},
                    "train_split": 0.75, "seed": 0},
    "limit": 600, "budget": {"trials": 6}, "parallelism": 2,
    "sampler": {"type": "tpe", "seed": 0}, "pruner": {"type": "median", "n_startup_trials": 2},
}
LR = {"low": 1e-4, "high": 0.1, "log": True}


def _cli(live_server, *args, timeout=900):
    env = {**os.environ, "WORKBENCH_SERVER_URL": live_server.url,
           "WORKBENCH_TOKEN": live_server.token}
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """The module's server, with a start timeout for a loaded machine."""
    server = start_server(tmp_path_factory.mktemp("wbhome"), timeout=300)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def finished(live_server, tmp_path_factory):
    """The six-trial sweep, run to the end by ``workbench sweep spec.json --json``."""
    path = tmp_path_factory.mktemp("spec") / "sweep.json"
    path.write_text(json.dumps(SPEC))
    out = _cli(live_server, "sweep", str(path), "--json")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "sweep s_" in out.stderr
    return json.loads(out.stdout)


def test_tpe_sweep_prunes_and_reports_the_best_trial(finished, client):
    assert finished["state"] == "completed" and finished["error"] is None
    trials = finished["trials"]
    assert [t["number"] for t in trials] == list(range(6))
    states = [t["state"] for t in trials]
    assert set(states) <= {"complete", "pruned"} and "pruned" in states, trials
    assert states[:2] == ["complete", "complete"]  # nothing had finished to compare with
    assert trials[5]["state"] == "pruned" and trials[5]["pruned_at_epoch"] == 1
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: t["value"])
    assert finished["best"]["number"] == best["number"]
    assert finished["best"]["value"] == best["value"] > 0.3
    assert finished["counts"] == {"total": 6, "complete": len(complete),
                                  "pruned": states.count("pruned"), "failed": 0, "running": 0}
    # the objective is the run's own final val_accuracy; intermediate values are its epochs
    run = client.get(f"/api/runs/{best['run_id']}").json()
    assert run["metrics"]["val_accuracy"] == best["value"]
    assert best["intermediate"]["2"] == best["value"]
    assert set(finished["importance"]) == {"lr", "width"}


def test_every_trial_is_a_run_of_the_sweeps_experiment(finished, client):
    table = client.get("/api/runs/table", params={
        "filter": "experiment = 'sweep-tiny'", "columns": "run_id,name,architecture,lr,tags",
        "limit": 100}).json()
    by_run = {row["run_id"]: row for row in table["items"]}
    assert set(by_run) == {t["run_id"] for t in finished["trials"]}
    for trial in finished["trials"]:
        row = by_run[trial["run_id"]]
        assert row["name"] == f"tiny-t{trial['number']}"
        assert row["architecture"] == f"784-{trial['params']['width']}-" \
                                      f"{trial['params']['width']}-10"
        assert row["lr"] == pytest.approx(trial["params"]["lr"])
        assert f"sweep:{finished['sweep_id']}" in row["tags"]


def test_rest_faces_list_get_and_envelope(finished, client, live_server):
    items = client.get("/api/sweeps").json()["items"]
    assert finished["sweep_id"] in [s["sweep_id"] for s in items]
    assert "trials" not in items[0]
    one = client.get(f"/api/sweeps/{finished['sweep_id']}").json()
    assert len(one["trials"]) == 6 and "importance" not in one
    v1 = client.get(f"/api/v1/sweeps/{finished['sweep_id']}").json()
    assert v1["success"] is True and v1["data"]["best"] == finished["best"]
    assert client.get("/api/v1/sweeps").json()["data"]["total"] >= 1
    missing = client.get("/api/sweeps/s_000000000000")
    assert missing.status_code == 404 and "sweep_id" in missing.text
    gone = client.get("/api/v1/sweeps/s_000000000000").json()
    assert gone["error"]["code"] == "RESOURCE_NOT_FOUND"
    listed = _cli(live_server, "sweeps")
    assert listed.returncode == 0 and finished["sweep_id"] in listed.stdout, listed.stderr
    shown = _cli(live_server, "sweeps", finished["sweep_id"])
    assert shown.returncode == 0 and "best: trial" in shown.stdout and "pruned" in shown.stdout


@pytest.mark.parametrize("change, field", [
    ({"space": {}}, "space"),
    ({"space": {"lr": {"low": 0.1, "high": 0.01}}}, "space.lr"),
    ({"space": {"lr": {"low": 1e-4, "high": 20.0}}}, "space.lr.high"),
    ({"space": {"depth": {"values": [1, 9]}}}, "space.depth.values[1]"),
    ({"space": {"optimizer": {"values": ["adam", "lbfgs"]}}}, "space.optimizer.values[1]"),
    ({"space": {"colour": {"values": [1]}}}, "space.colour"),
    ({"space": {"lr": LR}, "sampler": {"type": "grid"}}, "space.lr"),
    ({"space": {"lr": LR}, "target": "nowhere"}, "target"),
    ({"space": {"lr": LR}, "dataset": "cifar"}, "dataset"),
    ({"space": {"lr": LR}, "objective": {"metric": "f1"}}, "objective.metric"),
    ({"space": {"lr": LR}, "layer_sizes": [100, 10]}, "layer_sizes"),
    ({"space": {"width": {"low": 8, "high": 65536}, "depth": {"values": [4]}}}, "space.width"),
    ({"space": {"lr": LR}, "pruner": {"type": "often"}}, "pruner.type"),
])
def test_bad_specs_are_422_naming_the_field(client, change, field):
    spec = {**SPEC, **change}
    r = client.post("/api/sweeps", json=spec)
    assert r.status_code == 422, r.text
    assert any(e.startswith(field) for e in r.json()["errors"]), r.text
    v1 = client.post("/api/v1/sweeps", json=spec)
    assert v1.status_code == 422, v1.text
    assert v1.json()["error"]["code"] == "VALIDATION_ERROR"
    assert v1.json()["error"]["details"]["field"].startswith(field.split(".")[0]), v1.text
    assert field in v1.json()["error"]["message"], v1.text


def test_notebook_starts_lists_and_cancels_a_sweep(finished, live_server):
    from workbench import notebook as wb
    from workbench.client import Client

    with Client(live_server.url, live_server.token) as c:
        wb.use(c)
        try:
            started = wb.sweep(SPEC, name="nb", budget={"trials": 20}, wait=False)
            assert started["state"] == "running" and started["experiment"] == "sweep-nb"
            listed = wb.sweeps()
            assert started["sweep_id"] in list(listed["sweep_id"])
            cancelled = c.cancel_sweep(started["sweep_id"])
            assert cancelled["state"] == "cancelled"
            assert cancelled["counts"]["running"] == 0
            for trial in cancelled["trials"]:
                if trial["run_id"]:
                    assert c.wait(trial["run_id"], timeout=600, progress=False)["state"] in (
                        "cancelled", "succeeded")
            frame = wb.sweep_trials(finished["sweep_id"])
            assert list(frame["trial"]) == list(range(6)) and "lr" in frame.columns
            assert frame.attrs["best"]["run_id"] == finished["best"]["run_id"]
        finally:
            wb.use(None)


def test_app_view_draws_the_sweep(finished, tmp_path):
    """The Sweeps tab's pieces on the finished sweep's data; the view on an empty store."""
    from workbench.service import Workbench
    from workbench.store import Store
    from workbench.ui.state import AppState
    from workbench.ui.sweeps_view import (
        SweepsView,
        best_so_far_figure,
        importance_figure,
        parallel_rows,
        summary_html,
        trials_table,
    )

    table = trials_table(finished)
    assert table.count("<tr") == 7 and "<tr class='best'>" in table
    assert "pruned at epoch 1" in table
    assert f"<b>{finished['best']['value']:.4f}</b>" in summary_html(finished)
    figure = best_so_far_figure(finished)
    assert {t.name for t in figure.data} == {"complete", "pruned", "best so far"}
    rows, names = parallel_rows(finished)
    assert names == ["lr", "width"] and len(rows) == finished["counts"]["complete"]
    assert set(importance_figure(finished["importance"]).data[0].y) == {"lr", "width"}
    service = Workbench(Store(tmp_path / "store.duckdb"), max_workers=0)
    try:
        view = SweepsView(AppState(service=service, defer_peak=True))
        assert view.sweep_id is None and "No sweeps yet" in view._summary.object
    finally:
        service.close()
