"""Submissions that would be stored only to fail later are refused at submit, in every face,
naming the field, and leave the store as it was (no new model, run or trainer job):

- data that does not fit the model: Cortex ``input_dim: 100`` for MNIST (784 features), an
  MNIST-API model with ``input_size`` 100 trained on MNIST (checked when the run is created, not
  when the model is: it may train on other data), a fine-tune .npz / IDX of another width;
- ``device: "cuda"`` on a machine without CUDA;
- booleans where integers are meant (``world_size: true``: strict ints);
- non-finite numbers anywhere (``min_delta: Infinity``, ``NaN`` learning rates, NaN weights).

Against a real server on loopback.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.utils.factories import mlp
from tests.utils.v1 import CORTEX_MODEL
from workbench.data import write_idx


@pytest.fixture(scope="module")
def model_id(client) -> str:
    r = client.post("/api/models", json={"architecture": mlp(16)})
    assert r.status_code == 200, r.text
    return r.json()["model_id"]


def counts(client) -> tuple[int, int, int]:
    """(models, runs, trainer jobs) in the store."""

    def one(sql: str) -> int:
        return client.post("/api/v1/sql", json={"query": sql}).json()["data"]["rows"][0][0]

    return (one("SELECT count(*) FROM models"), one("SELECT count(*) FROM runs"),
            len(client.get("/api/jobs").json()["jobs"]))


def raw(client, path: str, text: str):
    """POST a body as written (JSON extensions like Infinity/NaN included)."""
    return client.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


def v1_field(response) -> str:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return error["details"]["field"]


def mnist_errors(response, status: int) -> list[str]:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"detail", "errors"}
    return response.json()["errors"]


# ---- data that does not fit the model -------------------------------------------------------
def test_cortex_input_dim_must_fit_the_dataset(client):
    before = counts(client)
    for dataset in ("mnist", "fashion-mnist"):
        r = client.post("/api/v1/jobs/submit", json={
            "neural_model_config": {**CORTEX_MODEL, "input_dim": 100}, "dataset": dataset})
        assert v1_field(r) == "neural_model_config.input_dim"
        assert "784 features" in r.json()["error"]["message"]
    assert counts(client) == before


def test_mnist_input_size_is_checked_when_the_run_is_created(client):
    # A model of another width may be stored: it could train on other data later.
    narrow = client.post("/api/models", json={"architecture": mlp(16, input_size=100)})
    assert narrow.status_code == 200, narrow.text
    before = counts(client)
    for dataset in ("mnist", "fashion-mnist"):
        r = client.post(f"/api/models/{narrow.json()['model_id']}/train",
                        json={"dataset": dataset, "limit": 100})
        (line,) = mnist_errors(r, 422)
        assert line.startswith("dataset: ") and "784 features" in line and "100" in line
    assert counts(client) == before


def test_finetune_data_of_another_width_is_refused(client, trained, live_server, tmp_path):
    data = live_server.home / "data"
    data.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    npz = data / "narrow.npz"
    np.savez(npz, x_train=rng.standard_normal((50, 100)).astype(np.float32),
             y_train=rng.integers(0, 10, 50))
    idx = data / "small-images"
    write_idx(idx / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (50, 10, 10), np.uint8))
    write_idx(idx / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 50).astype(np.uint8))
    mismatched = data / "mismatched.npz"
    np.savez(mismatched, x_train=np.zeros((50, 784), np.uint8), y_train=np.zeros(40, np.uint8))
    not_npz = data / "garbage.npz"
    not_npz.write_bytes(b"PK\x03\x04 not really a zip")
    before = counts(client)
    for url, words in ((npz.as_uri(), "100 features"), (idx.as_uri() + "/", "100 features"),
                       (mismatched.as_uri(), "40 labels for 50 samples"),
                       (not_npz.as_uri(), "not a readable .npz")):
        r = client.post(f"/api/v1/models/{trained['job_id']}/finetune",
                        json={"dataset_config": {"dataset_url": url}})
        assert v1_field(r) == "dataset_config.dataset_url", r.text
        assert words in r.json()["error"]["message"], r.text
    assert counts(client) == before


# ---- a device the machine lacks ------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_at_submit(client, model_id, trained):
    before = counts(client)
    for device in ("cuda", "cuda:0", "cuda:3"):
        r = client.post(f"/api/models/{model_id}/train", json={"device": device, "limit": 100})
        (line,) = mnist_errors(r, 422)
        assert line.startswith("device: ") and "no CUDA device" in line
    r = client.post("/api/v1/jobs/submit", json={"neural_model_config": CORTEX_MODEL,
                                                 "device": "cuda", "limit": 100})
    assert v1_field(r) == "device"
    r = client.post(f"/api/v1/models/{trained['job_id']}/finetune", json={"device": "cuda"})
    assert v1_field(r) == "device"
    assert counts(client) == before


# ---- booleans are not integers ------------------------------------------------------------
def test_booleans_are_not_integers(client, model_id):
    before = counts(client)
    train = f"/api/models/{model_id}/train"
    for body, status, field in (
        ({"strategy": "ddp", "world_size": True}, 422, "world_size"),
        ({"limit": True}, 422, "limit"),
        ({"hyperparams": {"epochs": True}}, 400, "hyperparams.epochs"),
        ({"hyperparams": {"batch_size": True}}, 400, "hyperparams.batch_size"),
        ({"hyperparams": {"epochs": 2.0}}, 400, "hyperparams.epochs"),
    ):
        (line,) = mnist_errors(client.post(train, json=body), status)
        assert line.startswith(field + ":"), (body, line)
    arch = mlp(16)
    arch["layers"][0]["out"] = True
    for body, field in (
        ({"architecture": {**mlp(16), "input_size": True}}, "architecture.input_size"),
        ({"architecture": arch}, "architecture.layers[0].out"),
        ({"architecture": mlp(16), "hyperparams": {"seed": True}}, "hyperparams.seed"),
    ):
        lines = mnist_errors(client.post("/api/models", json=body), 400)
        assert any(line.startswith(field + ":") for line in lines), (body, lines)
    submit = "/api/v1/jobs/submit"
    for body, field in (
        ({"neural_model_config": CORTEX_MODEL, "strategy": "ddp", "world_size": True},
         "world_size"),
        ({"neural_model_config": CORTEX_MODEL, "training_config": {"max_epochs": True}},
         "training_config.max_epochs"),
        ({"neural_model_config": {**CORTEX_MODEL, "hidden_dims": [True]}},
         "neural_model_config.hidden_dims[0]"),
        ({"neural_model_config": {**CORTEX_MODEL, "input_dim": True}},
         "neural_model_config.input_dim"),
        ({"neural_model_config": CORTEX_MODEL, "limit": True}, "limit"),
    ):
        assert v1_field(client.post(submit, json=body)) == field, body
    for body, fragment in (
        ({"model_config": {"layer_sizes": [784, True, 10]}, "dataset_config": {}}, "layer_sizes"),
        ({"model_config": {"layer_sizes": [784, 16, 10]},
          "dataset_config": {"batch_size": True}}, "batch_size"),
    ):
        r = client.post("/api/jobs", json=body)
        assert r.status_code == 400 and fragment in r.json()["error"], r.text
    r = client.post("/api/devices/register", json={"ip": "127.0.0.1", "port": True, "job_id": "1"})
    assert r.status_code == 400 and "port" in r.json()["error"], r.text
    assert counts(client) == before


# ---- non-finite numbers anywhere ------------------------------------------------------------
def test_non_finite_numbers_are_refused(client, model_id, trained):
    before = counts(client)
    arch = json.dumps(mlp(16))
    for text, field in (
        (f'{{"architecture": {arch}, "hyperparams": {{"min_delta": Infinity}}}}',
         "hyperparams.min_delta"),
        (f'{{"architecture": {arch}, "hyperparams": {{"min_delta": 1e999}}}}',
         "hyperparams.min_delta"),
        (f'{{"architecture": {arch}, "hyperparams": {{"optimizer": {{"lr": NaN}}}}}}',
         "hyperparams.optimizer.lr"),
        (f'{{"architecture": {arch}, "hyperparams": {{"optimizer": {{"type": "adam", '
         f'"betas": [0.9, NaN]}}}}}}', "hyperparams.optimizer.betas[1]"),
        (f'{{"architecture": {arch}, "hyperparams": {{"train_split": -Infinity}}}}',
         "hyperparams.train_split"),
    ):
        lines = mnist_errors(raw(client, "/api/models", text), 400)
        assert any(line.startswith(field + ":") for line in lines), (text, lines)
    (line,) = mnist_errors(raw(client, f"/api/models/{model_id}/train",
                               '{"hyperparams": {"min_delta": Infinity}}'), 400)
    assert line.startswith("hyperparams.min_delta:")

    cortex = json.dumps(CORTEX_MODEL)
    for text, field in (
        (f'{{"neural_model_config": {cortex}, "training_config": {{"learning_rate": NaN}}}}',
         "training_config.learning_rate"),
        ('{"neural_model_config": {"input_dim": 784, "output_dim": 10, '
         '"dropout_rate": NaN}}', "neural_model_config.dropout_rate"),
        (f'{{"neural_model_config": {cortex}, "training_config": '
         f'{{"validation_split": -Infinity}}}}', "training_config.validation_split"),
    ):
        assert v1_field(raw(client, "/api/v1/jobs/submit", text)) == field, text
    finetune = f"/api/v1/models/{trained['job_id']}/finetune"
    assert v1_field(raw(client, finetune, '{"fine_tuning_config": {"learning_rate": Infinity}}')
                    ) == "fine_tuning_config.learning_rate"
    assert v1_field(raw(client, f"/api/v1/models/{trained['job_id']}/deploy",
                        '{"serving_config": {"timeout_ms": NaN}}')) == "serving_config.timeout_ms"

    r = raw(client, "/api/jobs", '{"model_config": {"layer_sizes": [784, 16, 10]}, '
            '"dataset_config": {"normalize": {"mean": [NaN], "std": [0.3]}}}')
    assert r.status_code in (400, 422) and "mean" in r.json()["error"], r.text
    r = client.post("/api/jobs", json={"model_config": {"layer_sizes": [784, 16, 10]},
                                       "dataset_config": {"normalize": {"mean": [0.1],
                                                                        "std": [0.0]}}})
    assert r.status_code == 400 and "std" in r.json()["error"], r.text  # a division by zero
    assert counts(client) == before

    # Inline weights: NaN in W is named, not turned into null outputs.
    params = {"layers": [{"type": "linear", "W": [[0.0] * 784 for _ in range(10)],
                          "b": [0.0] * 10}]}
    body = json.dumps({"architecture": {"input_size": 784, "layers": [
        {"type": "linear", "in": 784, "out": 10}]}, "parameters": params,
        "inputs": [[0.0] * 784]}).replace('"W": [[0.0, ', '"W": [[NaN, ', 1)
    (line,) = mnist_errors(raw(client, "/api/infer_adhoc", body), 422)
    assert line.startswith("parameters.layers[0].W:")
