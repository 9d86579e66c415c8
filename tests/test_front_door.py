"""One front door: every face reaches a home's store through the one process that owns it.

Real processes throughout: ``workbench serve`` subprocesses, the ``workbench`` CLI, IPython
kernels running the notebook API, the REST API and the ``/api/v1/ws`` websocket.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.utils.factories import mlp
from workbench.frontdoor.owner_file import pid_alive

TERMINAL = {"succeeded", "failed", "cancelled"}


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_id_of(stderr: str) -> str:
    match = re.search(r"run (r_[0-9a-f]+)", stderr)
    assert match, stderr[-2000:]
    return match.group(1)


def wait_terminal(http: httpx.Client, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = http.get(f"/api/runs/{run_id}").json()
        if run["state"] in TERMINAL:
            return run
        time.sleep(0.2)
    raise TimeoutError(run_id)


def test_every_cli_face_works_while_serve_owns_the_home(server_factory):
    """With `workbench serve` running, the CLI becomes its client: train (local and on a local
    kernel), runs, sql, nodes, keys all work, and their runs are the server's runs."""
    server = server_factory()
    env = {**os.environ, "WORKBENCH_HOME": str(server.home), "WORKBENCH_OFFLINE": "1"}
    owner = json.loads((server.home / "owner.json").read_text())
    assert owner["pid"] == server.process.pid and owner["url"] == server.url
    assert (server.home / "owner.json").stat().st_mode & 0o077 == 0  # the credential is private

    local = cli("train", "--layers", "784,32,10", "--epochs", "2", "--limit", "600", env=env)
    assert local.returncode == 0, local.stderr[-3000:]
    assert "started a background owner" not in local.stderr  # it used the running server
    for word in ("succeeded", "test_accuracy", "val_loss", "forward_tflops", "backward_tflops"):
        assert word in local.stdout, word
    kernel = cli("train", "--layers", "784,16,10", "--epochs", "1", "--limit", "300",
                 "--target", "local-kernel", env=env)
    assert kernel.returncode == 0, kernel.stderr[-3000:]
    assert "test_accuracy" in kernel.stdout  # the summary is the same on every target

    with server.http() as http:
        for out in (local, kernel):
            run = http.get(f"/api/runs/{run_id_of(out.stderr)}").json()
            assert run["state"] == "succeeded" and run["metrics"]["test_accuracy"] > 0.2  # chance: 0.1
        assert http.get(f"/api/runs/{run_id_of(kernel.stderr)}").json()["target"] == \
            "local-kernel"

    listed = cli("runs", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert {r["run_id"] for r in json.loads(listed.stdout)} == \
        {run_id_of(local.stderr), run_id_of(kernel.stderr)}
    counted = cli("sql", "--json", "SELECT count(*) AS n FROM runs", env=env)
    assert json.loads(counted.stdout) == [{"n": 2}], counted.stderr
    nodes = cli("nodes", "list", "--json", env=env)
    assert nodes.returncode == 0 and json.loads(nodes.stdout) == [], nodes.stderr
    keys = cli("keys", "list", "--json", env=env)
    assert keys.returncode == 0, keys.stderr
    assert f"local:{server.process.pid}" in {k["name"] for k in json.loads(keys.stdout)}
    assert server.process.poll() is None  # nobody opened the store behind its back


def test_owner_on_demand_is_shared_and_stops_cleanly(tmp_path):
    """No owner: the first face starts one; the next faces reuse it; `workbench stop` ends it,
    revoking its credential and removing the owner file."""
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_OFFLINE": "1"}
    first = cli("runs", env=env)
    assert first.returncode == 0 and "started a background owner" in first.stderr, first.stderr
    owner = json.loads((tmp_path / "home" / "owner.json").read_text())
    second = cli("keys", "list", "--json", env=env)
    assert "started a background owner" not in second.stderr
    assert f"local:{owner['pid']}" in {k["name"] for k in json.loads(second.stdout)}
    assert oct((tmp_path / "home").stat().st_mode & 0o777) == "0o700"
    status = cli("status", env=env)
    assert status.returncode == 0 and str(owner["pid"]) in status.stdout
    assert cli("stop", env=env).returncode == 0
    assert not pid_alive(owner["pid"])
    assert not (tmp_path / "home" / "owner.json").exists()
    # The store is free again: a face may open it directly.
    from workbench.store import Store

    with Store(tmp_path / "home" / "workbench.duckdb") as store:
        local_keys = [k for k in store.list_api_keys() if k.name == f"local:{owner['pid']}"]
        assert local_keys and local_keys[0].revoked_at is not None


def _ws_messages(url: str, token: str, run_id: str, *, last_event_id: int | None = None,
                 until: str = "task.completed", stop_after_epoch: int | None = None,
                 timeout: float = 240) -> list[dict]:
    got: list[dict] = []
    subscribe = {"type": "subscribe", "channel": "jobs", "task_id": run_id}
    if last_event_id is not None:
        subscribe["last_event_id"] = last_event_id
    with ws_connect(url.replace("http", "ws") + "/api/v1/ws?token=" + token,
                    open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "auth.ok"
        ws.send(json.dumps(subscribe))
        assert json.loads(ws.recv(timeout=30))["type"] == "subscribed"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=timeout))
            if message.get("task_id") != run_id:
                continue
            got.append(message)
            if message["type"] == until:
                break
            data = message.get("data") or {}
            if stop_after_epoch is not None and data.get("kind") == "epoch" and \
                    data.get("epoch") == stop_after_epoch:
                break
    return got


def test_websocket_reconnect_replays_what_it_missed_exactly_once(live_server):
    """Disconnect after epoch 1, reconnect with the last event id while the run goes on: every
    event missed arrives, in order, exactly once, then the live ones."""
    with live_server.http() as http:
        model = http.post("/api/models", json={"architecture": mlp(64), "hyperparams": {
            "epochs": 6, "batch_size": 32, "optimizer": {"type": "adam", "lr": 1e-3}}}).json()
        run_id = http.post(f"/api/models/{model['model_id']}/train",
                           json={"limit": 3000}).json()["run_id"]
        first = _ws_messages(live_server.url, live_server.token, run_id, stop_after_epoch=1)
        last_seen = first[-1]["event_id"]
        assert isinstance(last_seen, int)
        # Disconnected while epochs 2 and 3 end (the client misses them), then reconnect.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            events = http.get(f"/api/runs/{run_id}/events", params={"after": last_seen}).json()
            if sum(e["type"] == "epoch" for e in events["events"]) >= 2:
                break
            time.sleep(0.1)
        second = _ws_messages(live_server.url, live_server.token, run_id,
                              last_event_id=last_seen)
        run = wait_terminal(http, run_id)
        stored = http.get(f"/api/runs/{run_id}/events", params={"after": last_seen}).json()
    assert run["state"] == "succeeded"
    ids = [m["event_id"] for m in second]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), ids  # in order, no duplicates
    assert ids[0] > last_seen
    # Every event after the last one seen arrives -- the missed ones from the log, then the
    # live ones; only live step samples are thinned (two a second), as for any subscriber.
    wanted = [e["id"] for e in stored["events"]
              if e["type"] in ("run.started", "epoch", "run.completed", "run.failed")]
    assert [i for i in ids if i in set(wanted)] == wanted
    stored_ids = {e["id"] for e in stored["events"]}
    assert set(ids) <= stored_ids  # nothing invented, nothing from before the last id
    assert second[-1]["type"] == "task.completed"
    epochs = [m["data"]["epoch"] for m in second if m["data"].get("kind") == "epoch"]
    assert epochs == list(range(2, 7)), epochs
    missed = [e["id"] for e in events["events"]]  # what happened while disconnected
    assert set(missed) & {e["id"] for e in stored["events"] if e["type"] == "step"} <= set(ids)


def test_rest_events_resume_and_long_poll(live_server):
    with live_server.http() as http:
        model = http.post("/api/models", json={"architecture": mlp(32), "hyperparams": {
            "epochs": 2}}).json()
        run_id = http.post(f"/api/models/{model['model_id']}/train",
                           json={"limit": 600}).json()["run_id"]
        seen: list[dict] = []
        after = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # a client following with the long poll
            page = http.get(f"/api/runs/{run_id}/events",
                            params={"after": after, "wait": 10}).json()
            seen += page["events"]
            after = page["last_id"]
            if not page["events"] and page["state"] in TERMINAL:
                break
        everything = http.get(f"/api/runs/{run_id}/events").json()["events"]
        assert [e["id"] for e in seen] == [e["id"] for e in everything]
        assert [e["type"] for e in seen][-1] == "run.completed"
        assert "evaluation" in {e["type"] for e in seen}
        assert all("parameters_safetensors_b64" not in e["data"] for e in seen)
        started = time.monotonic()  # a finished run answers at once, wait or not
        assert http.get(f"/api/runs/{run_id}/events",
                        params={"after": after, "wait": 30}).json()["events"] == []
        assert time.monotonic() - started < 5
        assert http.get("/api/runs/r_missing/events").status_code == 404
        assert http.get(f"/api/runs/{run_id}/events", params={"after": -1}).status_code == 422
        newest = http.get("/api/runs", params={"limit": 1}).json()["items"]
        assert [r["run_id"] for r in newest] == [run_id]


REST_SCRIPT = """
import json, time
from workbench.frontdoor import http_client
with http_client() as http:
    arch = {"input_size": 784, "layers": [{"type": "linear", "in": 784, "out": 32},
            {"type": "relu"}, {"type": "linear", "in": 32, "out": 10}]}
    model = http.post("/models", json={"architecture": arch, "hyperparams": {"epochs": 3}}).json()
    run_id = http.post(f"/models/{model['model_id']}/train", json={"limit": 800}).json()["run_id"]
    while http.get(f"/runs/{run_id}").json()["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.2)
    print(run_id)
"""


@pytest.mark.slow
def test_two_kernels_the_cli_and_rest_train_at_once_on_one_home(tmp_path):
    """Two notebook kernels, the CLI and a REST script on one home at once: four concurrent
    runs, all recorded with every epoch, through one owner."""
    from tests.utils.kernel import Kernel

    home = tmp_path / "home"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1",
           "WORKBENCH_WORKERS": "4"}
    kernels = [Kernel(env), Kernel(env)]
    try:
        for i, k in enumerate(kernels):
            k.run("from workbench import notebook as wb\n"
                  f"run = wb.train([784, 32, 10], {{'epochs': 3, 'seed': {i}}}, limit=800, "
                  "device='cpu', show=False)\n", timeout=300)
        faces = [subprocess.Popen([sys.executable, "-m", "workbench.cli", "train", "--layers",
                                   "784,32,10", "--epochs", "3", "--limit", "800"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                 subprocess.Popen([sys.executable, "-c", REST_SCRIPT], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        outputs = [face.communicate(timeout=300) for face in faces]
        for face, (_, err) in zip(faces, outputs):
            assert face.returncode == 0, err[-3000:]
        run_ids = [k.run("print(run.wait(timeout=300)['run_id'])").strip() for k in kernels]
        run_ids += [run_id_of(outputs[0][1]), outputs[1][0].strip()]
    finally:
        for k in kernels:
            k.close()
    assert len(set(run_ids)) == 4
    listed = {r["run_id"]: r for r in json.loads(cli("runs", "--json", env=env).stdout)}
    assert {r: listed[r]["state"] for r in run_ids} == {r: "succeeded" for r in run_ids}
    counted = cli("sql", "--json", "SELECT run_id, count(DISTINCT epoch) AS epochs FROM metrics "
                  "WHERE name = 'val_accuracy' GROUP BY run_id", env=env)
    epochs = {row["run_id"]: row["epochs"] for row in json.loads(counted.stdout)}
    assert {r: epochs.get(r) for r in run_ids} == {r: 3 for r in run_ids}, epochs
    log = (home / "owner.log").read_text()
    assert log.count("owner of") == 1, log  # one owner served all four faces
