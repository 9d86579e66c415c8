"""Target ``ray`` on a Python without the ``ray`` extra: every face that submits a run (the MNIST
MLP API, a /api/v1 job, a sweep) answers 422 naming ``target`` and what to install,
and stores nothing; the providers list shows the target "not installed" with the same hint,
and it is no outage in the network's uptime. Where Ray is installed, its import is blocked
the way a missing package fails (``sys.modules["ray"] = None``); the check itself is the real
one. With Ray but not Ray Train (its ``pyarrow`` blocked the same way), a DDP run on ``ray`` is
422 naming ``strategy`` and what to install."""

from __future__ import annotations

import sys

import pytest

from tests.utils.factories import mlp, quick_hyperparams
from tests.utils.v1 import CORTEX_MODEL

AUTH = {"Authorization": "Bearer wb_secret"}
HINT = 'target: ray needs `pip install "nn-workbench[ray]"`'


@pytest.fixture
def client(tmp_path, monkeypatch):
    yield from _client_without(tmp_path, monkeypatch, "ray")


@pytest.fixture
def client_without_ray_train(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    yield from _client_without(tmp_path, monkeypatch, "pyarrow")  # one of ray[train]'s own


def _client_without(tmp_path, monkeypatch, module: str):
    from fastapi.testclient import TestClient

    from workbench.api.app import create_app
    from workbench.config import get_settings
    from workbench.service import Workbench
    from workbench.store import Store

    monkeypatch.setitem(sys.modules, module, None)  # its import fails as without the extra
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()
    try:
        app = create_app(Workbench(Store(tmp_path / "wb.duckdb")), token="wb_secret",
                         close_service=True)
        with TestClient(app, headers=AUTH) as c:
            yield c
    finally:
        get_settings.cache_clear()


def _refused(response) -> str:
    """Every string of a 422 body, joined (the API families nest their messages differently)."""
    assert response.status_code == 422, response.text

    def strings(value) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    return " | ".join(strings(response.json()))


def test_every_face_refuses_target_ray_saying_what_to_install(client):
    model_id = client.post("/api/models", json={"architecture": mlp(16),
                                                "hyperparams": quick_hyperparams()}
                           ).json()["model_id"]
    assert HINT in _refused(client.post(f"/api/models/{model_id}/train",
                                        json={"target": "ray", "limit": 100}))
    job = client.post("/api/v1/jobs/submit", json={
        "neural_model_config": CORTEX_MODEL, "target": "ray",
        "training_config": {"max_epochs": 1, "batch_size": 64, "learning_rate": 1e-3}})
    assert HINT in _refused(job)
    sweep = client.post("/api/sweeps", json={
        "target": "ray", "space": {"lr": {"low": 1e-4, "high": 0.1, "log": True}},
        "budget": {"trials": 2}})
    assert HINT in _refused(sweep)
    assert client.get("/api/runs").json()["items"] == []  # nothing was stored

    providers = client.get("/api/v1/providers").json()["data"]
    ray_row = next(p for p in providers if p["id"] == "ray")
    assert ray_row["status"] == "not installed" and "nn-workbench[ray]" in ray_row["name"]
    # an extra this server lacks is no outage of its network
    assert client.get("/api/v1/analytics/stats").json()["data"]["network_uptime"] == 100.0


def test_ddp_on_ray_without_ray_train_is_422_saying_what_to_install(client_without_ray_train):
    client = client_without_ray_train
    model_id = client.post("/api/models", json={"architecture": mlp(16),
                                                "hyperparams": quick_hyperparams()}
                           ).json()["model_id"]
    refused = _refused(client.post(f"/api/models/{model_id}/train", json={
        "target": "ray", "strategy": "ddp", "world_size": 2, "limit": 100}))
    assert "strategy: strategy 'ddp' on target 'ray' needs Ray Train: `pip install " \
        '"nn-workbench[ray]"`' in refused and "missing here: pyarrow" in refused, refused
    assert client.get("/api/runs").json()["items"] == []
    # a single-process run on Ray needs no Ray Train (not started here: it would start Ray)
    from workbench.executors.targets import choose

    assert choose("ray") == ("ray", {})
