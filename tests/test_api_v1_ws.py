"""``/api/v1/ws`` against a real server: authentication, Origin check, and a subscriber that
sees a run's task.started -> task.progress per epoch -> task.completed, in order."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.utils.v1 import submit_job


@pytest.fixture(scope="module")
def ws_url(live_server):
    return f"ws://127.0.0.1:{live_server.port}/api/v1/ws"


def _recv(ws, timeout: float = 60) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def test_unauthenticated_sockets_are_closed(ws_url):
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "channel": "jobs"}))
        message = _recv(ws)
        assert message["type"] == "error" and message["error"]["code"] == "AUTH_INVALID"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": "not-a-key"}))
        assert _recv(ws)["error"]["code"] == "AUTH_INVALID"


def test_foreign_origin_is_refused(ws_url, live_server):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url + f"?token={live_server.token}", origin="http://evil.example")
    assert refused.value.response.status_code == 403
    same = f"http://127.0.0.1:{live_server.port}"
    with connect(ws_url + f"?token={live_server.token}", origin=same) as ws:
        assert _recv(ws)["type"] == "auth.ok"


def test_subscriber_sees_started_progress_completed_in_order(ws_url, live_server):
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "auth", "token": live_server.token}))
        assert _recv(ws)["type"] == "auth.ok"
        ws.send(json.dumps({"type": "subscribe", "channel": "jobs"}))
        assert _recv(ws) == {"type": "subscribed", "channel": "jobs"}
        ws.send(json.dumps({"type": "subscribe", "channel": "bogus"}))
        error = _recv(ws)
        assert error["error"]["code"] == "VALIDATION_ERROR"
        assert error["error"]["details"]["field"] == "channel"

        with live_server.http() as client:
            job = submit_job(client, epochs=2, limit=500)
        seen = []
        while True:
            message = _recv(ws)
            if message.get("task_id") != job["task_id"]:
                continue
            assert message["channel"] == "jobs" and message["job_id"] == job["job_id"]
            seen.append(message)
            if message["type"] in ("task.completed", "task.failed", "task.cancelled"):
                break

    kinds = [(m["type"], m["data"].get("kind"), m["data"].get("epoch")) for m in seen
             if m["data"].get("kind") != "step"]
    assert kinds == [("task.started", None, None), ("task.progress", "epoch", 1),
                     ("task.progress", "epoch", 2), ("task.completed", None, None)]
    epochs = [m for m in seen if m["data"].get("kind") == "epoch"]
    assert all(m["data"]["epochs_total"] == 2 and "val_loss" in m["data"] for m in epochs)
    assert "parameters_safetensors_b64" not in seen[-1]["data"]  # no weights on the socket
    times = [m["time"] for m in seen]
    assert times == sorted(times)


def test_task_filter_limits_a_subscription(ws_url, live_server):
    with live_server.http() as client, connect(ws_url + f"?token={live_server.token}") as ws:
        assert _recv(ws)["type"] == "auth.ok"
        first = submit_job(client, epochs=1, limit=300)
        second = submit_job(client, epochs=1, limit=300)
        ws.send(json.dumps({"type": "subscribe", "channel": "tasks",
                            "job_id": second["job_id"]}))
        assert _recv(ws)["task_id"] == second["task_id"]
        while True:
            message = _recv(ws)
            assert message["task_id"] == second["task_id"], message
            if message["type"] == "task.completed":
                break
        assert first["task_id"] != second["task_id"]


def test_node_and_failure_events_reach_networks_and_system_channels():
    from workbench.api.v1.ws import Translator

    translate = Translator()
    node = {"type": "node.status", "node_id": "node_1", "time": 1.0,
            "data": {"status": "online", "previous": None, "url": "http://n1:8888"}}
    assert translate(node) == [("networks", {"type": "node.status", "node_id": "node_1",
                                             "data": node["data"], "time": 1.0})]
    failed = {"type": "run.failed", "run_id": "r_abc", "time": 2.0, "data": {"error": "boom"}}
    (jobs, task), (system, alert) = translate(failed)
    assert (jobs, task["type"], task["job_id"]) == ("jobs", "task.failed", "job_abc")
    assert (system, alert["type"], alert["data"]["task_id"]) == ("system", "system.alert", "r_abc")
