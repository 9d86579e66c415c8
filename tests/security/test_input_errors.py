"""User input that answered 500, against a real ``workbench serve``: each is refused with a
4xx naming the field, and the server keeps answering everyone afterwards.

- ``NaN`` / ``Infinity`` in a trainer job's ``dataset_config.normalize`` was stored, and every
  later ``GET /api/jobs`` and ``GET /api/jobs/{id}`` answered 500;
- a deeply nested body on the trainer API answered 500 with a ``RecursionError``;
- ``expires_at: "9999-12-31T23:59:59-14:00"`` on a new key was an ``OverflowError`` 500;
- a binary frame on ``/api/v1/ws`` raised ``KeyError: 'text'`` in the handler.
"""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

LAYERS = {"layer_sizes": [784, 32, 10]}


@pytest.fixture(scope="module")
def api(live_server):
    with httpx.Client(base_url=live_server.url + "/api", headers=live_server.headers,
                      timeout=60) as client:
        yield client


def _post_raw(api: httpx.Client, path: str, raw: bytes) -> httpx.Response:
    return api.post(path, content=raw, headers={"Content-Type": "application/json"})


def test_non_finite_numbers_are_refused_at_submit(api, live_server, record_property):
    good = api.post("/jobs", json={"model_config": LAYERS, "dataset_config": {"name": "MNIST"}})
    assert good.status_code == 200, good.text
    tried = 0
    for literal in ("NaN", "Infinity", "-Infinity", "1e999", "-1e400"):
        job = ('{"model_config": {"layer_sizes": [784, 32, 10]}, "dataset_config": '
               '{"name": "MNIST", ')
        for field, body in (
            ("dataset_config.normalize.mean[0]",
             job + f'"normalize": {{"mean": [{literal}], "std": [0.3081]}}}}}}'),
            ("dataset_config.normalize.std[0]",
             job + f'"normalize": {{"mean": [0.1], "std": [{literal}]}}}}}}'),
            ("dataset_config.extra", job + f'"extra": {literal}}}}}'),  # extras are stored too
        ):
            r = _post_raw(api, "/jobs", body.encode())
            tried += 1
            assert r.status_code == 422, (literal, r.status_code, r.text)
            assert set(r.json()) == {"error"} and r.json()["error"].startswith(field), r.text
        r = _post_raw(api, f"/network/train/{good.json()['job_id']}",
                      b'{"epochs": 1, "learning_rate": %s}' % literal.encode())
        tried += 1
        assert r.status_code == 422 and "learning_rate" in r.json()["error"], r.text
    # Nothing was stored: the listing and the job still answer, for everyone.
    listed = api.get("/jobs")
    assert listed.status_code == 200 and len(listed.json()["jobs"]) == 1
    assert api.get(f"/jobs/{good.json()['job_id']}").status_code == 200
    record_property("non_finite_bodies_refused", tried)


def test_deeply_nested_bodies_are_a_400_not_a_recursion_error(api, live_server):
    for depth in (33, 1000, 5000, 100_000):
        for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
            raw = opener * depth + b"1" + closer * depth
            for path in ("/jobs", "/devices/register", "/network/train/1"):
                r = _post_raw(api, path, raw)
                assert r.status_code == 400, (depth, path, r.status_code, r.text[:200])
                assert set(r.json()) == {"error"} and "nested" in r.json()["error"]
                assert "Recursion" not in r.text
        # the same nesting inside an otherwise valid job
        nested = b"[" * depth + b"]" * depth
        r = _post_raw(api, "/jobs", b'{"model_config": {"layer_sizes": [784, 32, 10]}, '
                      b'"dataset_config": {"name": "MNIST", "x": ' + nested + b"}}")
        assert r.status_code == 400 and "nested" in r.json()["error"], r.text[:200]
    # shallow extra structure is fine
    r = api.post("/jobs", json={"model_config": LAYERS,
                                "dataset_config": {"name": "MNIST", "tags": [[["a"]]]}})
    assert r.status_code == 200, r.text
    assert "RecursionError" not in live_server.log()


def test_key_expiry_out_of_range_is_a_422_naming_expires_at(live_server):
    with live_server.http() as http:
        for value in ("9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59-00:01",
                      "9999-12-31T23:00:00-01:00"):
            r = http.post("/api/v1/auth/keys", json={"name": "far", "permissions": ["read"],
                                                      "expires_at": value})
            assert r.status_code == 422, (value, r.text)
            error = r.json()["error"]
            assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == "expires_at"
            assert "expires_at" in error["message"]
        ok = http.post("/api/v1/auth/keys", json={"name": "far", "permissions": ["read"],
                                                   "expires_at": "9999-12-31T23:59:59+14:00"})
        assert ok.status_code == 201, ok.text
        assert http.get("/api/v1/auth/keys").status_code == 200
    assert "OverflowError" not in live_server.log()


def test_a_binary_websocket_frame_closes_with_1003(live_server):
    url = f"ws://127.0.0.1:{live_server.port}/api/v1/ws?token={live_server.token}"
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "auth.ok"
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=30)) == {"type": "pong"}
        ws.send(b"\x00\x01binary")
        message = json.loads(ws.recv(timeout=30))
        assert message["type"] == "error" and "binary" in message["error"]["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    # the server is fine, and logged no traceback for it
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "auth.ok"
    assert "KeyError" not in live_server.log()
