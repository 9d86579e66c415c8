"""Exports of trained networks: ONNX checked with onnxruntime and TorchScript with torch.jit,
both against the PyTorch model (within 1e-5), directly and downloaded from the REST API after a
native-spec CNN was created (``POST /api/v1/networks``) and trained."""

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.utils.v1 import wait_run
from workbench.data import load_splits
from workbench.export import inference_module, to_onnx, to_torchscript
from workbench.spec import Hyperparams, validate_network
from workbench.train import TrainOptions, train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "architectures"
# every layer whose eval behaviour differs from training, plus pooling of both kinds
SPEC = validate_network({"input_shape": [1, 28, 28], "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "padding": 1}, {"type": "batchnorm2d"},
    {"type": "silu"}, {"type": "maxpool2d", "kernel": 2},
    {"type": "conv2d", "out": 6, "kernel": 3, "stride": 2}, {"type": "gelu"},
    {"type": "avgpool2d", "kernel": 2}, {"type": "flatten"}, {"type": "dropout", "p": 0.2},
    {"type": "linear", "out": 24}, {"type": "layernorm"}, {"type": "tanh"},
    {"type": "linear", "out": 10}, {"type": "softmax"}]})


@pytest.fixture(scope="module")
def trained():
    splits = load_splits("mnist", offline=True, limit=400, progress=False)
    hp = Hyperparams.model_validate({"epochs": 1, "batch_size": 50})
    result = train(SPEC, hp, splits, options=TrainOptions(device="cpu"))
    return result.model.state_dict(), splits.x_test[:37].numpy()


def test_onnx_round_trip_matches_torch(trained):
    tensors, x = trained
    expected = inference_module(SPEC, tensors)(torch.from_numpy(x)).detach().numpy()
    session = ort.InferenceSession(to_onnx(SPEC, tensors))
    (got,) = session.run(None, {"input": x})
    assert got.shape == (37, 10)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    (one,) = session.run(None, {"input": x[:1]})  # any batch size
    np.testing.assert_allclose(one, expected[:1], atol=1e-5, rtol=0)


def test_torchscript_round_trip_matches_torch(trained):
    tensors, x = trained
    expected = inference_module(SPEC, tensors)(torch.from_numpy(x)).detach()
    loaded = torch.jit.load(io.BytesIO(to_torchscript(SPEC, tensors)))
    torch.testing.assert_close(loaded(torch.from_numpy(x)), expected, atol=1e-5, rtol=0)


def test_cnn_created_trained_and_exported_over_rest(live_server):
    lenet = json.loads((EXAMPLES / "lenet5.json").read_text())
    with live_server.http() as http:
        bad = {**lenet, "layers": [{"type": "linear", "out": 10}]}
        refused = http.post("/api/v1/networks", json={"architecture": bad})
        assert refused.status_code == 422
        assert "layers[0]: linear expects [features], got [1, 28, 28]" in refused.text
        # the MNIST MLP API keeps its own rules: no native spec there
        assert http.post("/api/models", json={"architecture": lenet}).status_code == 400

        created = http.post("/api/v1/networks", json={"architecture": lenet,
                                                      "hyperparams": {"epochs": 1}})
        assert created.status_code == 201, created.text
        model_id = created.json()["data"]["model_id"]
        queued = http.post(f"/api/models/{model_id}/train", json={"limit": 300, "offline": True})
        assert queued.status_code == 202, queued.text
        run = wait_run(http, queued.json()["run_id"])
        assert run["state"] == "succeeded", run
        job = "job_" + run["run_id"].removeprefix("r_")

        x = load_splits("mnist", offline=True, limit=300, progress=False).x_test[:5].numpy()
        inferred = http.post("/api/infer", json={"param_id": run["param_id"],
                                                 "return": {"logits": True},
                                                 "inputs": x.tolist()})
        assert inferred.status_code == 200, inferred.text
        logits = np.array(inferred.json()["outputs"]["logits"], dtype=np.float32)

        onnx_file = http.get(f"/api/v1/models/{job}/export", params={"format": "onnx"})
        assert onnx_file.status_code == 200, onnx_file.text
        assert onnx_file.headers["content-disposition"].endswith('.onnx"')
        (got,) = ort.InferenceSession(onnx_file.content).run(None, {"input": x})
        np.testing.assert_allclose(got, logits, atol=1e-5, rtol=0)

        script = http.get(f"/api/v1/models/{job}/export", params={"format": "torchscript"})
        assert script.status_code == 200
        loaded = torch.jit.load(io.BytesIO(script.content))
        np.testing.assert_allclose(loaded(torch.from_numpy(x)).detach().numpy(), logits,
                                   atol=1e-5, rtol=0)

        assert http.get(f"/api/v1/models/{job}/export",
                        params={"format": "pickle"}).status_code == 422
        # the MNIST MLP API's Parameters JSON has no form for conv weights: a clear 409
        params = http.get(f"/api/params/{run['param_id']}")
        assert params.status_code == 409 and "export" in params.text
        assert http.get("/api/v1/models/job_0000/export").status_code == 404
