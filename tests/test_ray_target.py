"""Target ``ray`` (the ``ray`` extra) against a real ``workbench serve`` connected to a local Ray
cluster this module starts (4 logical CPUs, loopback, its own temp dir): a run trained as a Ray
task ends with exactly the per-epoch metrics of the same seeded run trained here, its events stored
by the owner; a sweep started with ``workbench sweep`` runs every trial as a run on ``ray``; a
Ray run pauses at an epoch's checkpoint, resumes on Ray from it and is cancelled; a
``strategy: ddp`` run trains as a 2-worker Ray Train job with the metrics of the same run on
target ``distributed``, and cancels. Skipped when
Ray is not installed (the error a server without Ray gives is tested in ``test_ray_missing.py``),
or, saying why, when this machine cannot start a local Ray in three tries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ray = pytest.importorskip("ray")

from tests.utils import equal_runs  # noqa: E402
from tests.utils.equal_runs import history  # noqa: E402
from tests.utils.factories import mlp, quick_hyperparams  # noqa: E402
from tests.utils.v1 import wait_run  # noqa: E402
from workbench import events as ev  # noqa: E402

pytestmark = pytest.mark.timeout(600)  # a Ray cluster, a server and its tasks on 2 loaded cores

HP = quick_hyperparams(epochs=2, batch_size=32)
TRAIN = {"limit": 400, "device": "cpu", "target": "ray"}
SWEEP = {
    "name": "onray", "target": "ray", "space": {"lr": {"low": 1e-4, "high": 0.1, "log": True}},
    "layer_sizes": [784, 16, 10],
    "hyperparams": {"epochs": 1, "batch_size": 64, "optimizer": {"type": "adam"},
                    "train_split": 0.75, "seed": 0},
    "limit": 300, "budget": {"trials": 3}, "parallelism": 2,
    "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
}


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray head on loopback; its address is what WORKBENCH_RAY_ADDRESS names."""
    # Short: Ray's unix socket paths live under it (at most 107 characters).
    temp = tempfile.mkdtemp(prefix="wbray-", dir="/tmp")
    # Ray Train gives its workers 60 s to start; each imports torch on 2 loaded cores here.
    patient = pytest.MonkeyPatch()
    patient.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    try:
        for attempt in (1, 2, 3):
            try:
                ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                         _temp_dir=temp, _node_ip_address="127.0.0.1",
                         object_store_memory=100 * 1024 * 1024)
                break
            except Exception as exc:  # the raylet may miss Ray's fixed 30 s start window
                ray.shutdown()
                if attempt == 3:  # the machine, not the target: say so, do not fail the suite
                    pytest.skip(f"a local Ray did not start on this machine in 3 tries: {exc}")
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        patient.undo()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory):
    from tests.utils.server import start_server

    srv = start_server(tmp_path_factory.mktemp("ray-home"), workers=2, timeout=300,
                       extra_env={"WORKBENCH_RAY_ADDRESS": cluster})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def model_id(server):
    with server.http() as http:
        return http.post("/api/models", json={"architecture": mlp(16),
                                              "hyperparams": HP}).json()["model_id"]


def trained_here() -> list[tuple]:
    return equal_runs.trained_here(mlp(16), HP, limit=TRAIN["limit"])


def test_a_run_on_ray_equals_the_same_run_trained_locally(server, model_id):
    with server.http() as http:
        queued = http.post(f"/api/models/{model_id}/train", json=TRAIN)
        assert queued.status_code == 202, queued.text
        run = wait_run(http, queued.json()["run_id"], timeout=300)
        assert run["state"] == "succeeded", (run, server.log()[-3000:])
        assert run["target"] == "ray"
        events = http.get(f"/api/runs/{run['run_id']}/events").json()["events"]
        types = [e["type"] for e in events]
        assert types.count(ev.EPOCH) == HP["epochs"] and types.count(ev.RUN_COMPLETED) == 1
        assert history(http, run["run_id"]) == trained_here()
        providers = http.get("/api/v1/providers").json()["data"]
        assert {"id": "ray", "kind": "ray", "status": "online"}.items() <= \
            next(p for p in providers if p["id"] == "ray").items()


def test_a_sweep_runs_its_trials_on_ray(server, tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(SWEEP))
    env = {**os.environ, "WORKBENCH_SERVER_URL": server.url, "WORKBENCH_TOKEN": server.token}
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "sweep", str(path), "--json"],
                         env=env, capture_output=True, text=True, timeout=500)
    assert out.returncode == 0, out.stderr + out.stdout + server.log()[-3000:]
    sweep = json.loads(out.stdout)
    assert sweep["state"] == "completed" and sweep["error"] is None, sweep
    assert sweep["counts"]["complete"] == 3, sweep
    with server.http() as http:
        for trial in sweep["trials"]:
            run = http.get(f"/api/runs/{trial['run_id']}").json()
            assert run["target"] == "ray" and run["state"] == "succeeded", run
            assert run["metrics"]["val_accuracy"] == trial["value"]


def wait_until(http, run_id: str, condition, timeout: float = 300) -> dict:
    return equal_runs.wait_until(http, run_id, condition, timeout)


LONG_EPOCHS = 1000  # ~15 ms each: the pause and the cancel land seconds before the end


def all_events(http, run_id: str) -> list[dict]:
    """Every event of the run (a long run has more than a page's default 1,000)."""
    return http.get(f"/api/runs/{run_id}/events", params={"limit": 10_000}).json()["events"]


def test_a_ray_run_pauses_resumes_on_ray_from_its_checkpoint_and_cancels(server, model_id):
    with server.http() as http:
        queued = http.post(f"/api/models/{model_id}/train",
                           json={**TRAIN, "limit": 2000, "hyperparams": {"epochs": LONG_EPOCHS}})
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["run_id"]
        wait_until(http, run_id, lambda r: r["epoch"] >= 1)
        assert http.post(f"/api/runs/{run_id}/pause").status_code == 202
        paused = wait_until(http, run_id, lambda r: r["state"] == "paused")
        at = paused["epoch"]
        assert 1 <= at < LONG_EPOCHS, paused
        events = all_events(http, run_id)
        assert [e["data"]["epoch"] for e in events if e["type"] == ev.CHECKPOINT] == [at]

        resumed = http.post(f"/api/runs/{run_id}/resume", json={"target": "ray"})
        assert resumed.status_code == 202, resumed.text
        wait_until(http, run_id, lambda r: r["state"] == "running" and r["epoch"] > at)
        assert http.post(f"/api/runs/{run_id}/cancel").status_code == 200
        run = wait_run(http, run_id, timeout=120)
        assert run["state"] == "cancelled" and at < run["epoch"] < LONG_EPOCHS, run
        events = all_events(http, run_id)
        types = [e["type"] for e in events]
        assert types.count(ev.RUN_CANCELLED) == 1 and ev.RUN_COMPLETED not in types
        epochs = [e["data"]["epoch"] for e in events if e["type"] == ev.EPOCH]
        assert epochs == list(range(1, len(epochs) + 1))  # the resumed run went on numbering


DDP = {**TRAIN, "strategy": "ddp", "world_size": 2}


@pytest.mark.slow  # two Ray Train jobs start: ~3 min on 2 loaded cores
def test_ddp_on_ray_train_equals_the_same_run_on_distributed_and_cancels(server, model_id):
    """Two Ray Train workers (gloo) run the engine's DDP loop: rank 0's events reach the owner
    through the relay, and every epoch's metrics are those of the same seeded 2-rank run on
    the ``distributed`` target (same loop, same slices, same reductions, exactly). A second,
    long DDP run on Ray (started at once: Ray Train's start dominates here) cancels at an
    epoch's end and cannot pause. One test, so the three runs overlap."""
    with server.http() as http:
        ids = {}
        for name, body in (("ray", DDP), ("distributed", {**DDP, "target": "distributed"}),
                           ("long", {**DDP, "limit": 2000, "hyperparams": {"epochs": LONG_EPOCHS}})):
            queued = http.post(f"/api/models/{model_id}/train", json=body)
            assert queued.status_code == 202, queued.text
            ids[name] = queued.json()["run_id"]

        wait_until(http, ids["long"], lambda r: r["epoch"] >= 1, timeout=500)
        refused = http.post(f"/api/runs/{ids['long']}/pause")  # Ray Train ranks: no checkpoint
        assert refused.status_code == 409 and "cannot pause this run" in refused.text, \
            refused.text
        assert http.post(f"/api/runs/{ids['long']}/cancel").status_code == 200
        cancelled = wait_run(http, ids["long"], timeout=120)
        assert cancelled["state"] == "cancelled" and 1 <= cancelled["epoch"] < LONG_EPOCHS, \
            cancelled
        types = [e["type"] for e in all_events(http, ids["long"])]
        assert types.count(ev.RUN_CANCELLED) == 1 and ev.RUN_COMPLETED not in types

        for target in ("ray", "distributed"):
            run = wait_run(http, ids[target], timeout=500)
            assert run["state"] == "succeeded" and run["target"] == target, \
                (run, server.log()[-3000:])
        events = http.get(f"/api/runs/{ids['ray']}/events").json()["events"]
        types = [e["type"] for e in events]
        assert types.count(ev.EPOCH) == HP["epochs"] and types.count(ev.RUN_COMPLETED) == 1
        started = next(e for e in events if e["type"] == ev.RUN_STARTED)["data"]
        assert started["strategy"] == "ddp" and started["world_size"] == 2
        on_ray = history(http, ids["ray"])
        assert len(on_ray) == 4 * HP["epochs"] + 2, on_ray  # train/val each epoch, test once
        assert on_ray == history(http, ids["distributed"])


def test_pipeline_on_ray_is_refused_naming_strategy(server, model_id):
    with server.http() as http:
        refused = http.post(f"/api/models/{model_id}/train",
                            json={**TRAIN, "strategy": "pipeline", "world_size": 2})
        assert refused.status_code == 422, refused.text
        assert any(e.startswith("strategy: strategy 'pipeline' is not available on target "
                                "'ray'") for e in refused.json()["errors"]), refused.text


@pytest.mark.parametrize("device, world, resources, expected", [
    ("cpu", 2, {"CPU": 2, "GPU": 2}, False),
    ("auto", 2, {"CPU": 4, "GPU": 2}, True),
    ("auto", 2, {"CPU": 4, "GPU": 1}, False),
    ("cpu", 4, {"CPU": 2}, "world_size: 4 Ray Train workers need 4 CPUs; the Ray cluster has 2"),
    ("cuda", 2, {"CPU": 4, "GPU": 1}, "device 'cuda': 2 ranks need 2 GPUs; the Ray cluster has 1"),
])
def test_a_ddp_run_that_the_ray_cluster_cannot_hold_fails_saying_why(device, world, resources,
                                                                     expected):
    """Checked before Ray Train starts: its workers would wait for resources forever."""
    from workbench.executors.ray_executor import _ddp_uses_gpu
    from workbench.train.job import RunSpec

    spec = RunSpec(run_id="r", architecture=mlp(16), hyperparams=HP, device=device,
                   strategy="ddp", world_size=world)
    if isinstance(expected, bool):
        assert _ddp_uses_gpu(spec, resources) is expected
    else:
        with pytest.raises(RuntimeError, match=expected):
            _ddp_uses_gpu(spec, resources)
