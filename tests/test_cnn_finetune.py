"""Fine-tuning a native-spec CNN through ``POST /api/v1/models/{job_id}/finetune`` (the
Cortex fine-tune route): its conv2d and linear layers are named ``layer1..`` for freezing, a
frozen conv keeps its trained weights exactly, the rest trains on (the app in-process on a
real store, as tests/test_trainer_api.py does)."""

import io
import json
import time
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "architectures"
AUTH = {"Authorization": "Bearer wb_secret"}


def _wait(client, run_id, timeout=300):
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}", headers=AUTH).json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.2)


def _weights(client, run_id):
    job = "job_" + run_id.removeprefix("r_")
    r = client.get(f"/api/v1/models/{job}/export", params={"format": "torchscript"},
                   headers=AUTH)
    assert r.status_code == 200, r.text
    return torch.jit.load(io.BytesIO(r.content)).state_dict()


def test_finetune_a_cnn_with_frozen_convolutions(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from workbench.api.app import create_app
    from workbench.config import get_settings
    from workbench.service import Workbench
    from workbench.store import Store

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()
    lenet = json.loads((EXAMPLES / "lenet5.json").read_text())
    try:
        app = create_app(Workbench(Store(tmp_path / "wb.duckdb")), token="wb_secret",
                         close_service=True)
        with TestClient(app) as client:
            created = client.post("/api/v1/networks", headers=AUTH, json={
                "architecture": lenet, "hyperparams": {"epochs": 1, "batch_size": 50}})
            assert created.status_code == 201, created.text
            model_id = created.json()["data"]["model_id"]
            queued = client.post(f"/api/v1/networks/{model_id}/train", headers=AUTH,
                                 json={"limit": 200, "offline": True})
            assert queued.status_code == 202, queued.text
            run = _wait(client, queued.json()["data"]["run_id"])
            assert run["state"] == "succeeded", run
            job = "job_" + run["run_id"].removeprefix("r_")

            bad = client.post(f"/api/v1/models/{job}/finetune", headers=AUTH,
                              json={"fine_tuning_config": {"freeze_layers": ["layer9"]}})
            assert bad.status_code == 422
            assert "this model has layer1, layer2, layer3, layer4, layer5" in bad.text
            tuned = client.post(f"/api/v1/models/{job}/finetune", headers=AUTH, json={
                "fine_tuning_config": {"freeze_layers": ["layer1", "layer2"], "epochs": 1},
                "dataset_config": {"limit": 200}})
            assert tuned.status_code == 202, tuned.text
            tuned_run = _wait(client, tuned.json()["data"]["task_id"])
            assert tuned_run["state"] == "succeeded", tuned_run

            before, after = _weights(client, run["run_id"]), _weights(client,
                                                                      tuned_run["run_id"])
            weights = [k for k in before if k.endswith("weight")]
            for frozen in weights[:2]:  # the two convolutions
                assert torch.equal(after[frozen], before[frozen]), frozen
            assert not torch.equal(after[weights[-1]], before[weights[-1]])  # trained on
    finally:
        get_settings.cache_clear()
