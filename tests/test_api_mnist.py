"""The MNIST MLP API over plain HTTP against a real ``workbench serve`` on 127.0.0.1."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.utils.factories import mlp, mnist_test, quick_hyperparams


def _poll(http: httpx.Client, run_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = http.get(f"/api/runs/{run_id}").json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish: {run}")


@pytest.fixture(scope="module")
def trained(live_server):
    """The minimal flow: create -> train -> poll to succeeded."""
    with live_server.http() as http:
        r = http.post("/api/models", json={"architecture": mlp(64),
                                           "hyperparams": quick_hyperparams()})
        assert r.status_code == 200, r.text
        model = r.json()
        assert model["model_id"].startswith("m_") and model["created_at"]
        r = http.post(f"/api/models/{model['model_id']}/train")
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] == "queued" and accepted["run_id"].startswith("r_")
        run = _poll(http, accepted["run_id"])
    assert run["state"] == "succeeded", run
    return model, run


def test_minimal_flow_accuracy_matches_validation(live_server, trained):
    model, run = trained
    assert run["epoch"] == run["epochs_total"] == 4
    assert set(run["metrics"]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert run["param_id"].startswith("p_")
    x, y = mnist_test()
    labels = []
    with live_server.http() as http:
        for i in range(0, len(x), 512):
            r = http.post("/api/infer", json={"param_id": run["param_id"],
                                              "inputs": x[i:i + 512].tolist()})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model_id"] == model["model_id"] and body["latency_ms"] >= 0
            assert set(body["outputs"]) == {"labels", "probabilities"}
            labels += body["outputs"]["labels"]
    accuracy = float(np.mean(np.array(labels) == y))
    assert abs(accuracy - run["metrics"]["val_accuracy"]) <= 0.03, (accuracy, run["metrics"])
    assert accuracy > 0.85


def test_binary_inference_matches_json(live_server, trained):
    _, run = trained
    x, _ = mnist_test()
    batch = x[:7]
    with live_server.http() as http:
        as_json = http.post("/api/infer", json={
            "param_id": run["param_id"], "inputs": batch.tolist(),
            "return": {"logits": True, "probabilities": False, "labels": True}}).json()
        r = http.post("/api/infer", content=batch.astype("<f4").tobytes(),
                      params={"param_id": run["param_id"], "shape": "7,784", "logits": "true",
                              "probabilities": "false"},
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        as_binary = r.json()
    assert as_binary["outputs"]["labels"] == as_json["outputs"]["labels"]
    assert "probabilities" not in as_binary["outputs"]
    np.testing.assert_allclose(as_binary["outputs"]["logits"], as_json["outputs"]["logits"],
                               rtol=1e-6, atol=1e-6)


def test_params_and_run_listing(live_server, trained):
    model, run = trained
    with live_server.http() as http:
        r = http.get(f"/api/params/{run['param_id']}")
        assert r.status_code == 200
        params = r.json()
        assert params["size_bytes"] == 4 * (784 * 64 + 64 + 64 * 10 + 10)
        layers = params["parameters"]["layers"]
        assert [layer["type"] for layer in layers] == ["linear", "relu", "linear"]
        assert len(layers[0]["W"]) == 64 and len(layers[0]["W"][0]) == 784
        # Ad-hoc inference with those parameters gives the stored model's answers.
        x, _ = mnist_test()
        adhoc = http.post("/api/infer_adhoc", json={
            "architecture": mlp(64), "parameters": params["parameters"],
            "inputs": x[:5].tolist()}).json()
        stored = http.post("/api/infer", json={"param_id": run["param_id"],
                                               "inputs": x[:5].tolist()}).json()
        assert adhoc["outputs"]["labels"] == stored["outputs"]["labels"]
        # Paging: two more runs, then walk the pages of one.
        for _ in range(2):
            assert http.post(f"/api/models/{model['model_id']}/train",
                             json={"hyperparams": {"epochs": 1}, "limit": 200}).status_code == 202
        seen, cursor = [], None
        while True:
            params_q = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            page = http.get(f"/api/models/{model['model_id']}/runs", params=params_q).json()
            seen += [item["run_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 3 and seen[0] == run["run_id"]
        assert http.get(f"/api/models/{model['model_id']}/runs",
                        params={"cursor": "not-a-cursor"}).status_code == 422


@pytest.mark.parametrize("method,path", [
    ("POST", "/api/models"), ("GET", "/api/models/m_x"), ("POST", "/api/models/m_x/train"),
    ("GET", "/api/models/m_x/runs"), ("GET", "/api/runs/r_x"), ("POST", "/api/runs/r_x/cancel"),
    ("GET", "/api/params/p_x"), ("POST", "/api/infer"), ("POST", "/api/infer_adhoc"),
])
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc"])
def test_every_endpoint_needs_a_valid_token(live_server, method, path, auth):
    headers = {"Authorization": auth} if auth else {}
    r = httpx.request(method, live_server.url + path, headers=headers, json={})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_token(live_server):
    assert httpx.get(live_server.url + "/api/health").json()["status"] == "ok"


def test_error_statuses_name_the_field(live_server, trained):
    model, run = trained
    with live_server.http() as http:
        bad_dims = mlp(64)
        bad_dims["layers"][2]["in"] = 63
        r = http.post("/api/models", json={"architecture": bad_dims})
        assert r.status_code == 400
        assert any("layers[2]" in e and "63" in e and "64" in e for e in r.json()["errors"])
        r = http.post("/api/models", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "invalid JSON" in r.json()["errors"][0]
        for kind, path in (("model", "/api/models/m_nope"), ("run", "/api/runs/r_nope"),
                           ("param", "/api/params/p_nope"), ("model", "/api/models/%20/runs")):
            r = http.get(path)
            assert r.status_code == 404 and kind in r.json()["detail"], (path, r.text)
        assert http.post("/api/models/m_nope/train").status_code == 404
        r = http.post("/api/infer", json={"param_id": "p_nope", "inputs": [[0.0] * 784]})
        assert r.status_code == 404
        # 409: an override the model's own hyperparameters contradict.
        capped = http.post("/api/models", json={"architecture": mlp(8),
                                                "hyperparams": {"epochs": 1, "max_epochs": 2}})
        r = http.post(f"/api/models/{capped.json()['model_id']}/train",
                      json={"hyperparams": {"epochs": 5}})
        assert r.status_code == 409 and "max_epochs" in r.json()["errors"][0]
        # 422: inference inputs.
        x, _ = mnist_test()
        inputs = x[:4].tolist()
        inputs[3] = inputs[3][:783]
        r = http.post("/api/infer", json={"param_id": run["param_id"], "inputs": inputs})
        assert r.status_code == 422
        assert r.json()["errors"] == ["inputs[3]: expected 784 values, got 783"]
        r = http.post("/api/infer", content=b'{"param_id": "%s", "inputs": [[NaN%s]]}'
                      % (run["param_id"].encode(), b", 0.0" * 783),
                      headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "inputs[0][0]" in r.json()["errors"][0]
        r = http.post("/api/infer", json={"param_id": run["param_id"],
                                          "inputs": [[0.0] * 784] * 513})
        assert r.status_code == 422 and r.json()["errors"][0].startswith("inputs:")
        r = http.post("/api/infer", content=b"\0" * 12,
                      params={"param_id": run["param_id"], "shape": "1,784"},
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 422 and "3136 bytes" in r.json()["errors"][0]


def test_body_size_limit(server_factory):
    server = server_factory(extra_env={"WORKBENCH_MAX_BODY_BYTES": "4096"})
    with server.http() as http:
        r = http.post("/api/infer", json={"param_id": "p_x", "inputs": [[0.0] * 2000]})
        assert r.status_code == 413, r.text
        assert "4096" in r.json()["errors"][0]

        def chunks():
            yield b'{"param_id": "p_x", "inputs": [['
            yield b"0.0, " * 2000
            yield b"0.0]]}"

        r = http.post("/api/infer", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert http.post("/api/infer", json={"param_id": "p_x",
                                             "inputs": [[0.0] * 10]}).status_code == 404
