"""Deploy, artifacts and fine-tuning of ``/api/v1`` against a real server: predictions equal
``/api/infer``, 429 past ``max_concurrent_requests``, downloaded weights predict the same, and a
fine-tune with ``layer1`` frozen leaves its weights bit-identical (data from file:// .npz and
http:// IDX)."""

from __future__ import annotations

import functools
import http.server
import threading
import time

import numpy as np
import pytest
import torch

from tests.utils.factories import mnist_test
from tests.utils.v1 import submit_job, wait_job
from workbench.data import load_raw, write_idx
from workbench.model import build_model, from_safetensors, load_weights, logits_module
from workbench.spec import validate_architecture


@pytest.fixture(scope="module")
def trained(client):
    """A completed Cortex job (2 epochs on 1,000 samples) and its results."""
    job = submit_job(client, epochs=2, limit=1000)
    assert wait_job(client, job["job_id"])["status"] == "completed"
    results = client.get(f"/api/v1/jobs/{job['job_id']}/results").json()["data"]
    return {**job, **results}


@pytest.fixture(scope="module")
def digits():
    x, _ = mnist_test()
    return x[:16]


def _infer(client, param_id, x):
    response = client.post("/api/infer", json={"param_id": param_id, "inputs": x.tolist(),
                                               "return": {"logits": True}})
    assert response.status_code == 200, response.text
    return response.json()["outputs"]


def _weights(client, job_id) -> dict[str, torch.Tensor]:
    results = client.get(f"/api/v1/jobs/{job_id}/results").json()["data"]
    download = client.get(results["model_artifacts"]["weights_url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/octet-stream"
    return from_safetensors(download.content)


def test_deployment_predicts_like_api_infer(client, trained, digits):
    response = client.post(f"/api/v1/models/{trained['job_id']}/deploy", json={
        "deployment_config": {"min_nodes": 1, "max_nodes": 2, "memory_request": "1Gi"},
        "serving_config": {"batch_size": 8, "timeout_ms": 5, "max_concurrent_requests": 4}})
    assert response.status_code == 201, response.text
    deployment = response.json()["data"]
    assert deployment["status"] == "deploying" and deployment["param_id"] == trained["param_id"]

    served = client.post(deployment["endpoints"]["inference"],
                         json={"inputs": digits.tolist(), "return": {"logits": True}})
    assert served.status_code == 200, served.text
    body = served.json()
    reference = _infer(client, trained["param_id"], digits)
    assert body["data"]["outputs"]["labels"] == reference["labels"]
    np.testing.assert_allclose(body["data"]["outputs"]["probabilities"],
                               reference["probabilities"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(body["data"]["outputs"]["logits"], reference["logits"],
                               rtol=1e-5, atol=1e-5)

    metrics = client.get(deployment["endpoints"]["metrics"]).json()["data"]
    assert metrics["requests_total"] == 1 and metrics["samples"] == 16
    assert metrics["latency_ms"]["p50"] > 0 and metrics["in_flight"] == 0

    bad = client.post(deployment["endpoints"]["inference"], json={"inputs": [[0.0] * 783]})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "inputs"
    listed = client.get("/api/v1/deployments", params={"job_id": trained["job_id"]}).json()
    assert deployment["deployment_id"] in {d["deployment_id"] for d in listed["data"]}


def test_micro_batching_combines_concurrent_requests(client, trained, digits):
    deployment = client.post(f"/api/v1/models/{trained['job_id']}/deploy", json={
        "serving_config": {"batch_size": 4, "timeout_ms": 2000,
                           "max_concurrent_requests": 8}}).json()["data"]
    url = deployment["endpoints"]["inference"]
    results = [None] * 4

    def call(i):
        results[i] = client.post(url, json={"inputs": digits[i:i + 1].tolist()})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r.status_code == 200 for r in results)
    reference = _infer(client, trained["param_id"], digits[:4])["labels"]
    assert [r.json()["data"]["outputs"]["labels"][0] for r in results] == reference
    # How they were grouped depends on thread scheduling; no batch may pass batch_size.
    metrics = client.get(deployment["endpoints"]["metrics"]).json()["data"]
    assert metrics["requests_total"] == 4 and metrics["samples"] == 4
    assert max(r.json()["meta"]["batch_samples"] for r in results) <= 4


def test_deployment_refuses_past_max_concurrent_requests(client, trained, digits):
    deployment = client.post(f"/api/v1/models/{trained['job_id']}/deploy", json={
        "serving_config": {"batch_size": 512, "timeout_ms": 3000,
                           "max_concurrent_requests": 1}}).json()["data"]
    url, metrics_url = deployment["endpoints"]["inference"], deployment["endpoints"]["metrics"]
    first = {}
    waiting = threading.Thread(
        target=lambda: first.setdefault("r", client.post(url, json={"inputs": digits.tolist()})))
    waiting.start()
    deadline = time.monotonic() + 30
    while client.get(metrics_url).json()["data"]["in_flight"] < 1:  # the batcher holds it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    refused = client.post(url, json={"inputs": digits.tolist()})
    waiting.join(60)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert refused.headers["Retry-After"] == "1"
    assert first["r"].status_code == 200
    metrics = client.get(metrics_url).json()["data"]
    assert metrics["requests_rejected"] == 1 and metrics["requests_total"] == 1


def test_deploy_errors(client, trained):
    bad = client.post(f"/api/v1/models/{trained['job_id']}/deploy",
                      json={"deployment_config": {"min_nodes": 3, "max_nodes": 2}})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"] == "deployment_config"
    missing = client.post("/api/v1/models/job_nope/deploy", json={})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


def test_weights_url_gives_the_same_predictions(client, trained, digits):
    tensors = _weights(client, trained["job_id"])
    config = client.get(trained["model_artifacts"]["config_url"]).json()
    arch = validate_architecture(config["architecture"], allow_dropout=True)
    net = logits_module(load_weights(build_model(arch), tensors).eval())
    with torch.no_grad():
        logits = net(torch.from_numpy(digits))
    reference = _infer(client, trained["param_id"], digits)
    assert logits.argmax(1).tolist() == reference["labels"]
    np.testing.assert_allclose(logits.numpy(), reference["logits"], rtol=1e-5, atol=1e-5)


def _assert_frozen_first_layer(before, after):
    assert torch.equal(before["0.weight"], after["0.weight"])  # bit-identical
    assert torch.equal(before["0.bias"], after["0.bias"])
    assert not torch.equal(before["2.weight"], after["2.weight"])  # the rest trained


def test_finetune_from_npz_with_frozen_first_layer(client, trained, live_server):
    raw = load_raw("mnist", offline=True, progress=False)
    # file:// data must lie under the server's data roots (default: its data dir).
    path = live_server.home / "data" / "more.npz"
    path.parent.mkdir(exist_ok=True)
    np.savez(path, x_train=raw.x_train[-400:].numpy(), y_train=raw.y_train[-400:].numpy())
    response = client.post(f"/api/v1/models/{trained['job_id']}/finetune", json={
        "fine_tuning_config": {"learning_rate": 1e-3, "epochs": 1, "freeze_layers": ["layer1"]},
        "dataset_config": {"dataset_url": path.as_uri(), "validation_split": 0.25}})
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]
    assert accepted["original_job_id"] == trained["job_id"]
    assert wait_job(client, accepted["finetune_job_id"])["status"] == "completed"
    task = client.get(f"/api/v1/tasks/{accepted['task_id']}").json()["data"]
    assert task["model"] == trained["model_id"]
    _assert_frozen_first_layer(_weights(client, trained["job_id"]),
                               _weights(client, accepted["finetune_job_id"]))


def test_finetune_from_http_idx(client, trained, tmp_path):
    raw = load_raw("mnist", offline=True, progress=False)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", raw.x_train[:300].numpy())
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", raw.y_train[:300].numpy().astype(np.uint8))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # quiet
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        response = client.post(f"/api/v1/models/{trained['job_id']}/finetune", json={
            "fine_tuning_config": {"epochs": 1, "freeze_layers": ["layer1"]},
            "dataset_config": {"dataset_url": url, "validation_split": 0.2}})
        assert response.status_code == 202, response.text
        job_id = response.json()["data"]["finetune_job_id"]
        assert wait_job(client, job_id)["status"] == "completed"
    finally:
        httpd.shutdown()
        httpd.server_close()
    _assert_frozen_first_layer(_weights(client, trained["job_id"]), _weights(client, job_id))


def test_finetune_validation_names_the_field(client, trained):
    url = f"/api/v1/models/{trained['job_id']}/finetune"
    bad_layer = client.post(url, json={"fine_tuning_config": {"freeze_layers": ["layer9"]}})
    assert bad_layer.status_code == 422
    assert bad_layer.json()["error"]["details"]["field"] == "fine_tuning_config.freeze_layers[0]"
    everything = client.post(url, json={"fine_tuning_config": {"freeze_layers": ["layer1",
                                                                                "layer2"]}})
    assert everything.status_code == 422
    bad_url = client.post(url, json={"dataset_config": {"dataset_url": "s3://bucket/data"}})
    assert bad_url.status_code == 422
    assert bad_url.json()["error"]["details"]["field"] == "dataset_config.dataset_url"
    missing = client.post(url, json={"dataset_config": {"dataset_url": "file:///no/such.npz"}})
    assert missing.status_code == 422
