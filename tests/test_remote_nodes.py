"""Remote nodes end to end: two real ``jupyter server`` processes on 127.0.0.1, each with its own
token, stand in for two remote machines. Register both (a wrong token is refused), see them
online with capabilities probed on the node, train on one with live events, cancel a run, kill a
server mid-run (the run fails with a reason, finished epochs stay, the node goes offline), the
CLI and the REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from tests.utils.server import free_port, start_server
from workbench import events as ev
from workbench.cli import main as cli_main
from workbench.config import get_settings
from workbench.executors.registry import install
from workbench.executors.remote_kernel import JupyterServerClient
from workbench.nodes import (
    NODE_STATUS,
    NodeAuthError,
    NodeUnreachableError,
    TokenFile,
    node_public,
)
from workbench.service import Workbench
from workbench.spec import Architecture
from workbench.store import Store

ARCH = Architecture.from_layer_sizes([784, 32, 10], num_classes=10).to_json()
HP = {"epochs": 2, "batch_size": 64, "optimizer": {"type": "adam", "lr": 1e-3}}


# ---- real Jupyter Servers ----------------------------------------------------------------------
@dataclass
class JupyterServer:
    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def kill(self) -> None:
        """SIGKILL the server and the kernels it started: the machine is gone."""
        kernels = _children(self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for pid in kernels:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def start_jupyter(root: Path, token: str, timeout: float = 120) -> JupyterServer:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_NO_CONFIG": "1",  # a bare server: no lab/proxy/panel extensions to load
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "WORKBENCH_OFFLINE": "1",
        "WORKBENCH_HOME": str(root / "wbhome"),  # never the test's store
    }
    log = root / "jupyter.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", "--allow-root",
             f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root,
        )
    server = JupyterServer(f"http://127.0.0.1:{port}", token, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter server exited: {log.read_text()}")
        try:
            r = httpx.get(server.url + "/api/status", headers={"Authorization": f"token {token}"},
                          timeout=2)
            if r.status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.kill()
    raise RuntimeError(f"jupyter server not ready in {timeout} s: {log.read_text()}")


@pytest.fixture(scope="module")
def jupyters(tmp_path_factory):
    a = start_jupyter(tmp_path_factory.mktemp("node-a"), "token-a-" + os.urandom(4).hex())
    try:
        b = start_jupyter(tmp_path_factory.mktemp("node-b"), "token-b-" + os.urandom(4).hex())
    except BaseException:
        a.kill()
        raise
    yield a, b
    a.kill()
    b.kill()


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("wbhome")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(home))
        mp.setenv("WORKBENCH_OFFLINE", "1")
        mp.delenv("WORKBENCH_SERVER_URL", raising=False)
        get_settings.cache_clear()
        yield home
    get_settings.cache_clear()


BUS_EVENTS: list[dict] = []  # everything the service published, for node.status checks


@pytest.fixture(scope="module")
def service(home):
    store = Store()
    wb = Workbench(store)
    wb.bus.subscribe(BUS_EVENTS.append)
    targets = install(wb)  # what mount_v1 does for the REST server
    yield wb, targets.nodes
    wb.close()
    store.close()


@pytest.fixture(scope="module")
def registered(service, jupyters):
    _, nodes = service
    a, b = jupyters
    node_a = nodes.register(a.url, a.token, name="box-a", region="lab-a")
    node_b = nodes.register(b.url + "/", b.token, name="box-b", region="lab-b")
    return node_a, node_b


def node_events() -> list[dict]:
    return [e for e in BUS_EVENTS if e["type"] == NODE_STATUS]


class RunWatcher:
    """Bus subscriber for one run: notes epoch 1 and whether the run was still live then."""

    def __init__(self, wb: Workbench):
        self.wb = wb
        self.first_epoch = threading.Event()
        self.live_at_first_epoch: bool | None = None
        self.types: list[str] = []
        self.run_id: str | None = None
        wb.bus.subscribe(self)

    def __call__(self, event: dict) -> None:
        if event.get("run_id") != self.run_id:
            return
        self.types.append(event["type"])
        if event["type"] == ev.EPOCH and not self.first_epoch.is_set():
            self.live_at_first_epoch = not self.wb.store.get_run(self.run_id).is_terminal
            self.first_epoch.set()


def start(wb: Workbench, target: str, epochs: int) -> tuple[str, RunWatcher]:
    watcher = RunWatcher(wb)
    model = wb.create_model(ARCH, HP)
    run = wb.start_run(model.model_id, target=target, hyperparams={"epochs": epochs},
                       limit=1000)
    watcher.run_id = run.run_id
    return run.run_id, watcher


# ---- tests ---------------------------------------------------------------------------------------
def test_wrong_token_and_dead_url_are_refused(service, jupyters):
    _, nodes = service
    a, _ = jupyters
    with pytest.raises(NodeAuthError, match="refused the token"):
        nodes.register(a.url, "not-the-token")
    with pytest.raises(NodeUnreachableError, match="unreachable"):
        nodes.register(f"http://127.0.0.1:{free_port()}", "whatever")
    with pytest.raises(ValueError, match="url"):
        nodes.register("ftp://example.org", "t")
    assert nodes.list()[1] == 0


def test_both_nodes_online_with_probed_capabilities(service, registered, jupyters, home):
    wb, nodes = service
    node_a, node_b = registered
    page, total = nodes.list(status="online")
    assert total == 2 and [n.node_id for n in page] == [node_a.node_id, node_b.node_id]
    assert [n.name for n in nodes.list(region="lab-b")[0]] == ["box-b"]
    assert [n.node_id for n in nodes.list(limit=1, offset=1)[0]] == [node_b.node_id]
    for node in (node_a, node_b):
        assert node.status == "online" and node.last_seen is not None
        assert node.cpu_count == os.cpu_count()
        assert node.torch_version == torch.__version__
        assert node.workbench_version and node.server_version
        assert node.performance_score is not None and node.performance_score > 0
        assert "train" in node.capabilities
        if torch.cuda.is_available():
            assert node.gpu_info["model"] and node.gpu_info["compute_capability"]
        else:
            assert node.gpu_info is None
        view = node_public(node).model_dump(mode="json")
        assert view["uptime"] is not None and "token" not in json.dumps(view)
    assert node_b.url == jupyters[1].url  # registered with a trailing slash, stored without

    tokens = home / "node_tokens.json"
    assert tokens.stat().st_mode & 0o777 == 0o600
    assert TokenFile(tokens).get(node_a.node_id).startswith("token-a-")
    db_text = " ".join(str(v) for row in wb.store._read("SELECT * FROM nodes") for v in row)
    assert "token-a-" not in db_text

    registered_events = [e for e in node_events() if e["data"]["previous"] is None]
    assert {e["node_id"] for e in registered_events} == {node_a.node_id, node_b.node_id}
    assert node_a.node_id in wb.targets and "local-kernel" in wb.targets


@pytest.fixture(scope="module")
def served(tmp_path_factory, jupyters):
    """A `workbench serve` owning another home, both nodes registered there over REST; the
    notebook API and the CLI of this process reach it through the front door (owner file)."""
    a, b = jupyters
    server = start_server(tmp_path_factory.mktemp("served-home"))
    ids = []
    with server.http() as http:
        for box, name in ((a, "box-a"), (b, "box-b")):
            created = http.post("/api/v1/nodes", json={"url": box.url, "token": box.token,
                                                       "name": name})
            assert created.status_code == 201, created.text
            ids.append(created.json()["data"]["id"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(server.home))
        get_settings.cache_clear()
        yield server, ids
    get_settings.cache_clear()
    server.stop()


def test_train_on_a_node_from_the_notebook_api(served):
    from workbench import notebook

    server, (node_a, _) = served
    notebook.use(None)  # a fresh front-door client of this home's owner
    nb_run = notebook.train(ARCH, HP, target=node_a, limit=1000, show=False)
    run = nb_run.wait(timeout=300)
    assert run["state"] == "succeeded", run.get("error")
    assert run["target"] == node_a and run["device"] == "cpu"
    assert [h["epoch"] for h in nb_run.history] == [1, 2]  # the notebook's live figure data
    assert run["metrics"]["val_accuracy"] > 0.1 and run["metrics"]["test_accuracy"] > 0.1
    with server.http() as http:  # the server's own record: the same run
        assert http.get(f"/api/runs/{nb_run.run_id}").json()["param_id"] == run["param_id"]
        assert http.get(f"/api/params/{run['param_id']}").status_code == 200


def test_cli_summary_of_a_run_on_a_node(served, capsys):
    """``workbench train --target NODE`` prints test and validation metrics and the
    forward/backward split, like a local run's summary."""
    from tests.test_cli import SUMMARY, summary_rows

    _server, (_, node_b) = served
    assert cli_main(["train", "--layers", "784,32,10", "--epochs", "1", "--limit", "300",
                     "--target", node_b]) == 0
    out = capsys.readouterr()
    rows = summary_rows(out.out)
    assert rows["target"].strip() == node_b and f"on {node_b}" in out.err
    for name in SUMMARY:
        assert float(rows[name]) > 0, (name, out.out)


def test_cancel_a_run_on_a_node(service, registered, jupyters):
    wb, nodes = service
    _, node_b = registered
    _, b = jupyters
    run_id, watcher = start(wb, node_b.node_id, epochs=500)
    assert watcher.first_epoch.wait(300)
    busy = nodes.check(node_b.node_id)
    assert busy.status == "busy" and busy.current_load > 0

    wb.cancel_run(run_id)
    run = wb.wait_run(run_id, timeout=120)
    assert run.state == "cancelled" and ev.RUN_FAILED not in watcher.types
    _wait_for(lambda: JupyterServerClient(b.url, b.token).kernels() == [], 30)
    assert nodes.check(node_b.node_id).status == "online"
    assert {"busy", "online"} <= {e["data"]["status"] for e in node_events()
                                  if e["node_id"] == node_b.node_id}


def test_sweep_trials_train_on_a_node(service, registered):
    """A sweep whose target is a registered node: every trial is a run on that node (two at
    once there), ended and scored like a local trial."""
    wb, _ = service
    node_a, _ = registered
    sweep = wb.sweeps.create({
        "name": "on-node", "target": node_a.node_id, "limit": 300, "parallelism": 2,
        "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
        "hyperparams": {"epochs": 1, "batch_size": 64, "optimizer": {"type": "adam"}},
        "budget": {"trials": 3}, "sampler": {"type": "random", "seed": 1},
        "pruner": {"type": "none"}})
    done = wb.sweeps.wait(sweep["sweep_id"], timeout=600)
    assert done["state"] == "completed" and done["counts"]["complete"] == 3, done
    for trial in done["trials"]:
        run = wb.get_run(trial["run_id"])
        assert run.state == "succeeded" and run.target == node_a.node_id, run
        assert trial["value"] == run.metrics["val_accuracy"]
    assert done["best"]["value"] > 0.1


def test_killed_server_fails_the_run_keeping_epochs_and_goes_offline(service, registered,
                                                                    jupyters):
    wb, nodes = service
    node_a, _ = registered
    a, _ = jupyters
    run_id, watcher = start(wb, node_a.node_id, epochs=500)
    assert watcher.first_epoch.wait(300)
    a.kill()

    run = wb.wait_run(run_id, timeout=120)
    assert run.state == "failed"
    assert node_a.node_id in run.error and "unreachable" in run.error, run.error
    assert 1 in {m.epoch for m in wb.store.get_metrics(run_id, names=["val_accuracy"])}
    assert nodes.get(node_a.node_id).status == "offline"
    checked = nodes.check(node_a.node_id)
    assert checked.status == "offline" and "unreachable" in checked.last_error
    offline = [e for e in node_events() if e["node_id"] == node_a.node_id
               and e["data"]["status"] == "offline"]
    assert offline and "unreachable" in offline[0]["data"]["reason"]


def test_cli_lists_refuses_and_removes(served, jupyters, capsys):
    server, (node_a, node_b) = served
    a, b = jupyters
    assert cli_main(["nodes", "add", b.url, "--token", "wrong"]) == 2
    assert "already registered" in capsys.readouterr().err  # checked before the token
    assert cli_main(["nodes", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [n["id"] for n in listed] == [node_a, node_b]
    assert "token" not in json.dumps(listed)
    if a.process.poll() is not None:  # box-a was killed by an earlier test: check says so
        assert cli_main(["nodes", "check", node_a, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["status"] == "offline"
        assert cli_main(["nodes", "list", "--status", "offline", "--json"]) == 0
        assert [n["id"] for n in json.loads(capsys.readouterr().out)] == [node_a]

    assert cli_main(["nodes", "rm", node_a]) == 0
    with server.http() as http:
        assert http.get(f"/api/v1/nodes/{node_a}").status_code == 404
    assert TokenFile(server.home / "node_tokens.json").get(node_a) is None
    assert cli_main(["nodes", "rm", node_a]) == 2
    assert "not found" in capsys.readouterr().err


def test_rest_api_registers_lists_and_removes(tmp_path_factory, jupyters):
    _, b = jupyters
    server = start_server(tmp_path_factory.mktemp("rest-home"))
    try:
        with server.http() as http:
            refused = http.post("/api/v1/nodes", json={"url": b.url, "token": "wrong"})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["details"]["field"] == "token"
            assert http.post("/api/v1/nodes", json={"url": "nope", "token": "x"}
                             ).status_code == 422

            created = http.post("/api/v1/nodes", json={"url": b.url, "token": b.token,
                                                       "region": "lab-b"})
            assert created.status_code == 201, created.text
            node = created.json()["data"]
            assert node["status"] == "online" and node["cpu_count"] == os.cpu_count()
            assert b.token not in created.text
            assert http.post("/api/v1/nodes", json={"url": b.url, "token": b.token}
                             ).status_code == 409

            listed = http.get("/api/v1/nodes", params={"status": "online", "region": "lab-b"})
            assert [n["id"] for n in listed.json()["data"]["nodes"]] == [node["id"]]
            assert listed.json()["meta"]["pagination"]["total"] == 1
            assert http.get("/api/v1/nodes", params={"offset": 1}).json()["data"]["nodes"] == []
            assert http.get("/api/v1/nodes", params={"status": "sleepy"}).status_code == 422
            detail = http.get(f"/api/v1/nodes/{node['id']}").json()["data"]
            assert detail["uptime"]
            # neurogrid: "owner": "user_456", "earnings": {"total", "currency", "last_30_days"}
            bootstrap = next(k["key_id"] for k in http.get("/api/v1/auth/keys").json()["data"]
                             if k["name"] == "bootstrap-admin")
            assert detail["owner"] == bootstrap
            assert detail["earnings"] == {"total": "0.00", "currency": "USD",
                                          "last_30_days": "0.00", "compute_hours": 0.0}
            assert http.get("/api/v1/nodes/node_missing").status_code == 404
            assert http.delete(f"/api/v1/nodes/{node['id']}").status_code == 200
            assert http.get(f"/api/v1/nodes/{node['id']}").status_code == 404
    finally:
        server.stop()


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)
