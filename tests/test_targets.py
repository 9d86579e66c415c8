"""Compute targets through every face, against a real ``workbench serve``: a run on the local
Jupyter kernel through the MNIST MLP API, ``strategy: ddp`` through the API matching a
single-process run epoch by epoch, a Cortex job whose ``global_node_urls`` are two real
``workbench worker`` processes (DDP across them), and bad targets / URLs refused at submit time
with the offending field named."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.utils.factories import mlp
from tests.utils.server import LiveServer, free_port
from tests.utils.v1 import submit_job, wait_job
from tests.utils.workers import running_workers
from workbench.client import Client
from workbench.distributed.worker import worker_health

LIMIT = 600  # 540 training samples after the 90% split
HP = {"epochs": 2, "batch_size": 64, "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
      "seed": 3, "train_split": 0.9}


def _wait(client: Client, run_id: str, timeout: float = 150) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id)
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} did not end: {run}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    from tests.utils.server import start_server

    live = start_server(tmp_path_factory.mktemp("wbhome"), workers=3)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, server.token)


@pytest.fixture(scope="module")
def workers(tmp_path_factory) -> Iterator[list[int]]:
    """Two real ``workbench worker`` processes on 127.0.0.1; always stopped."""
    with running_workers(tmp_path_factory.mktemp("workerhome")) as (ports, _):
        yield ports


# ---- the MNIST MLP API -----------------------------------------------------------------------
def test_local_kernel_run_records_its_target_and_device(client, server):
    model = client.create_model(mlp(32), {**HP, "epochs": 1})
    queued = client.train(model["model_id"], limit=LIMIT, device="cpu", target="local-kernel")
    run = _wait(client, queued["run_id"])
    assert run["state"] == "succeeded", run
    assert run["target"] == "local-kernel" and run["device"] == "cpu"
    with server.http() as http:  # the native API shows the same placement
        task = http.get(f"/api/v1/tasks/{run['run_id']}").json()["data"]
    assert task["node_id"] == "local-kernel" and task["device"] == "cpu"


def test_unknown_target_and_strategy_misuse_are_422_naming_the_field(client, server):
    model = client.create_model(mlp(16), HP)
    with server.http() as http:
        url = f"/api/models/{model['model_id']}/train"
        bad = http.post(url, json={"target": "gpu-box-9"})
        assert bad.status_code == 422, bad.text
        [message] = bad.json()["errors"]
        assert message.startswith("target:") and "local-kernel" in message
        assert "distributed" in message
        bad = http.post(url, json={"target": "local-kernel", "strategy": "ddp"})
        assert bad.status_code == 422 and bad.json()["errors"][0].startswith("target:")
        bad = http.post(url, json={"world_size": 2})
        assert bad.status_code == 422 and bad.json()["errors"][0].startswith("world_size:")


def test_ddp_through_the_api_matches_a_single_process_run(server_factory):
    live = server_factory(workers=2)
    client = Client(live.url, live.token)
    model = client.create_model(mlp(32), HP)
    single = client.train(model["model_id"], limit=LIMIT, device="cpu")
    ddp = client.train(model["model_id"], limit=LIMIT, device="cpu", strategy="ddp",
                       world_size=2)
    single_run, ddp_run = _wait(client, single["run_id"]), _wait(client, ddp["run_id"])
    assert single_run["state"] == ddp_run["state"] == "succeeded", (single_run, ddp_run)
    assert single_run["target"] == "local" and ddp_run["target"] == "distributed"
    assert ddp_run["device"] == "cpu" and ddp_run["metrics"]["world_size"] == 2
    assert ddp_run["param_id"]  # rank 0's weights came back into the store
    live.stop()

    from workbench.store import Store

    with Store(live.home / "workbench.duckdb", read_only=True) as store:
        losses = {rid: [m.value for m in store.get_metrics(rid, names=["train_loss"])]
                  for rid in (single["run_id"], ddp["run_id"])}
    reference, distributed = losses[single["run_id"]], losses[ddp["run_id"]]
    assert len(reference) == len(distributed) == 2
    assert max(abs(a - b) for a, b in zip(reference, distributed)) < 1e-4


# ---- Cortex global_node_urls ------------------------------------------------------------------
def test_global_node_urls_of_two_workers_train_with_ddp(server, workers):
    urls = [f"http://127.0.0.1:{port}" for port in workers]
    with server.http() as http:
        job = submit_job(http, epochs=1, limit=LIMIT, global_node_urls=urls, device="cpu")
        status = wait_job(http, job["job_id"], timeout=150)
        assert status["status"] == "completed", status
        assert status["metrics"]["world_size"] == 2
        task = http.get(f"/api/v1/tasks/{job['task_id']}").json()["data"]
        assert task["node_id"] == "distributed" and task["device"] == "cpu"
        results = http.get(f"/api/v1/jobs/{job['job_id']}/results").json()["data"]
        assert results["param_id"] and results["epochs_run"] == 1
    # Both workers let their rank go (the coordinator stops them right after rank 0's result).
    for port in workers:
        deadline = time.monotonic() + 10
        while worker_health("127.0.0.1", port)["jobs"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker_health("127.0.0.1", port)["jobs"] == []


def test_bad_global_node_urls_are_a_validation_error_naming_the_url(server, workers):
    nobody = f"http://127.0.0.1:{free_port()}"
    good = f"http://127.0.0.1:{workers[0]}"
    cases = [([nobody], "global_node_urls[0]"),
             ([good, nobody], "global_node_urls[1]"),
             ([good, good + "/"], "global_node_urls[1]"),  # the same worker twice
             (["https://gpu.invalid/lab"], "global_node_urls[0]")]
    with server.http() as http:
        before = len(http.get("/api/v1/tasks").json()["data"]["tasks"])
        for urls, field in cases:
            response = http.post("/api/v1/jobs/submit", json={
                "neural_model_config": {"input_dim": 784, "hidden_dims": [16], "output_dim": 10},
                "global_node_urls": urls})
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] == "VALIDATION_ERROR"
            assert error["details"]["field"] == field, error
            assert error["message"].startswith(field)
        # Nothing was queued for the refused jobs.
        assert len(http.get("/api/v1/tasks").json()["data"]["tasks"]) == before


def test_v1_target_and_strategy_fields(server):
    with server.http() as http:
        job = submit_job(http, epochs=1, limit=LIMIT, strategy="pipeline", world_size=2,
                         device="cpu")
        status = wait_job(http, job["job_id"], timeout=150)
        assert status["status"] == "completed" and status["metrics"]["world_size"] == 2
        task = http.get(f"/api/v1/tasks/{job['task_id']}").json()["data"]
        assert task["node_id"] == "distributed"
        bad = http.post("/api/v1/jobs/submit", json={
            "neural_model_config": {"input_dim": 784, "hidden_dims": [16], "output_dim": 10},
            "target": "nowhere"})
        assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "target"

