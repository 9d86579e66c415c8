"""The run-status fast path (``workbench.api.status_fast_path``) answers exactly as the route.

It answers only an authorised read of a run in memory; every other request goes to the route,
so a revoked key, a missing key, an unknown run or a query string get the route's answers.
"""

from __future__ import annotations

import os

import pytest

AUTH = {"Authorization": "Bearer wb_fast_path_admin"}


@pytest.fixture
def app_client(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from workbench.api.app import create_app
    from workbench.config import get_settings
    from workbench.service import Workbench
    from workbench.store import Store

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()
    try:
        app = create_app(Workbench(Store(tmp_path / "wb.duckdb")), token=AUTH["Authorization"][7:],
                         close_service=True)
        with TestClient(app, headers=AUTH) as client:
            yield app, client
    finally:
        get_settings.cache_clear()


def _tracked_run(client) -> str:
    made = client.post("/api/runs", json={"name": "fast-path", "config": {"lr": 0.1}})
    assert made.status_code == 201, made.text
    run_id = made.json()["run_id"]
    logged = client.post(f"/api/runs/{run_id}/log-batch", json={"metrics": [
        {"key": "loss", "value": 0.5, "step": 1}]})
    assert logged.status_code == 200, logged.text
    return run_id


def _route_answer(app, client, path: str, **kwargs):
    """The same request answered by the route (the fast path switched off for it)."""
    fast = app.state.status_fast_path
    needed, fast._needed = fast._needed, "no-such-scope"
    try:
        return client.get(path, **kwargs)
    finally:
        fast._needed = needed


def test_a_run_in_memory_is_answered_here_with_the_routes_body(app_client):
    app, client = app_client
    run_id = _tracked_run(client)
    slow = _route_answer(app, client, f"/api/runs/{run_id}")
    before = app.state.status_fast_path.answered
    fast = client.get(f"/api/runs/{run_id}")
    assert app.state.status_fast_path.answered == before + 1
    assert fast.status_code == slow.status_code == 200
    assert fast.json() == slow.json() and fast.json()["state"] == "running"
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    # The rate limiter's headers are on both (the fast path sits inside it).
    for header in ("x-ratelimit-limit", "x-ratelimit-remaining"):
        assert header in fast.headers and header in slow.headers
    # An event changes the run: the next answer has it (no stale body).
    client.post(f"/api/runs/{run_id}/finish", json={"state": "succeeded"})
    assert client.get(f"/api/runs/{run_id}").json()["state"] == "succeeded"


@pytest.mark.parametrize("case", ["no key", "revoked key", "wrong key", "unknown run", "query"])
def test_everything_else_gets_the_routes_answer(app_client, case):
    app, client = app_client
    run_id = _tracked_run(client)
    path, kwargs = f"/api/runs/{run_id}", {}
    if case == "no key":
        kwargs["headers"] = {"Authorization": ""}
    elif case == "wrong key":
        kwargs["headers"] = {"Authorization": "Bearer wb_not_a_key"}
    elif case == "revoked key":
        reader = client.post("/api/v1/auth/keys", json={"name": "r", "permissions": ["read"]})
        assert reader.status_code in (200, 201), reader.text
        data = reader.json()["data"]
        kwargs["headers"] = {"Authorization": f"Bearer {data['key']}"}
        assert client.get(path, **kwargs).status_code == 200  # a valid reader is answered
        assert client.delete(f"/api/v1/auth/keys/{data['key_id']}").status_code == 200
    elif case == "unknown run":
        path = "/api/runs/r_doesnotexist"
    else:
        path += "?fields=state"
    before = app.state.status_fast_path.answered
    got = client.get(path, **kwargs)
    assert app.state.status_fast_path.answered == before
    expected = _route_answer(app, client, path, **kwargs)
    assert (got.status_code, got.json()) == (expected.status_code, expected.json())
    if case != "query":
        assert got.status_code in (401, 404), got.text


@pytest.mark.parametrize("otel_env", [False, True])
def test_fastapi_telemetry_is_on_only_when_opentelemetry_is_configured(tmp_path, monkeypatch,
                                                                       otel_env):
    from workbench.api.app import create_app
    from workbench.config import get_settings
    from workbench.service import Workbench
    from workbench.store import Store

    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    if otel_env:
        monkeypatch.setenv("OTEL_SERVICE_NAME", "workbench")
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert get_settings().opentelemetry is otel_env
        app = create_app(Workbench(Store(tmp_path / "wb.duckdb")), token="wb_t", close_service=True)
        config = getattr(app, "_telemetry", None)
        if config is None:
            pytest.skip("this FastAPI has no native telemetry")
        assert config["tracing"] is otel_env and config["metrics"] is otel_env
        app.state.service.close()
    finally:
        get_settings.cache_clear()
