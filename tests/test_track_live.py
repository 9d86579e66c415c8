"""``workbench.track`` end to end: real ``workbench serve`` processes, training scripts in their
own processes reaching the owner through the front door, a notebook kernel, and an owner
killed with SIGKILL mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from workbench.client import Client

pytestmark = pytest.mark.timeout(600)

CNN_SCRIPT = """
import sys, torch
import workbench.track as wb

torch.manual_seed(0)
x, y = torch.randn(512, 1, 28, 28), torch.randint(0, 10, (512,))
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
    torch.nn.Linear(8 * 13 * 13, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
config = {"lr": 0.05, "batch_size": 64, "epochs": 3, "arch": "cnn"}
run = wb.init(name="cnn-random", experiment="track-tests", config=config, tags=["cnn", "test"])
print(run.run_id, flush=True)
wb.watch(model, log_every=5)
step = 0
for epoch in range(3):
    for i in range(0, 512, 64):
        logits = model(x[i:i + 64])
        loss = torch.nn.functional.cross_entropy(logits, y[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = (logits.argmax(1) == y[i:i + 64]).float().mean()
        wb.log({"train/loss": loss.item(), "train/acc": acc}, step=step)  # acc: a tensor
        step += 1
    wb.log({"epoch_loss": loss.item()}, step=step - 1, epoch=epoch + 1)
record = wb.finish()
print(record["state"], flush=True)
"""

SURVIVOR_SCRIPT = """
import json, sys, time, pathlib
import workbench.track as wb

stop, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
run = wb.init(name="survivor", flush_interval=0.1, system_metrics=False)
print(run.run_id, flush=True)
step = 0
while not stop.exists():
    wb.log({"x": float(step), "y": 1.0}, step=step)
    step += 1
    time.sleep(0.002)
record = wb.finish(timeout=120)
out.write_text(json.dumps({"steps": step, "state": record["state"],
                           "spooled": run.spooled_batches, "sent": run.sent_points}))
"""


def _script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    for name in ("WORKBENCH_TOKEN", "WORKBENCH_SERVER_URL"):
        env.pop(name, None)  # the front door finds the owner through the home
    return env


def _workbench(home: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "workbench.cli", *args], env=_env(home),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _count(client: Client, run_id: str, key: str) -> tuple[int, int]:
    rows = client.sql(f"SELECT count(*), count(DISTINCT step) FROM metrics WHERE "
                      f"run_id = '{run_id}' AND name = '{key}'")["rows"]
    return rows[0][0], rows[0][1]


def test_rest_create_log_finish(live_server):
    http = live_server.http()
    created = http.post("/api/runs", json={"name": "rest", "experiment": "e",
                                           "config": {"lr": 0.1}, "tags": ["t"]})
    assert created.status_code == 201, created.text
    run = created.json()
    assert (run["state"], run["target"], run["config"], run["tags"]) == (
        "running", "external", {"lr": 0.1}, ["t"])
    run_id = run["run_id"]
    points = [{"key": "loss", "value": 1.0 / (i + 1), "step": i} for i in range(10_000)]
    first = http.post(f"/api/runs/{run_id}/log-batch", json={"batch_id": "b1", "metrics": points})
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 10_000 and not first.json()["duplicate"]
    again = http.post(f"/api/runs/{run_id}/log-batch", json={"batch_id": "b1", "metrics": points})
    assert again.json() == {**first.json(), "accepted": 0, "duplicate": True, "event_id": None}
    too_many = http.post(f"/api/runs/{run_id}/log-batch", json={"metrics": points + points[:1]})
    assert too_many.status_code == 422
    nan = http.post(f"/api/runs/{run_id}/log-batch", headers={"content-type": "application/json"},
                    content=b'{"metrics": [{"key": "a", "value": 1, "step": 0},'
                            b' {"key": "a", "value": NaN, "step": 1}]}')
    assert nan.status_code == 422 and nan.json()["errors"] == [
        "metrics[1].value: must be finite (got nan)"]
    client = Client(live_server.url, live_server.token)
    assert _count(client, run_id, "loss") == (10_000, 10_000)
    assert client.get_run(run_id)["metrics"] == {"loss": 1.0 / 10_000}
    kinds = [e["type"] for e in client.events(run_id)["events"]]
    assert kinds[:1] == ["run.started"] and kinds.count("metrics") == 1
    finished = http.post(f"/api/runs/{run_id}/finish", json={"state": "failed", "error": "boom"})
    assert finished.json()["state"] == "failed" and finished.json()["error"] == "boom"
    assert http.post(f"/api/runs/{run_id}/finish", json={"state": "failed"}).status_code == 200
    assert http.post(f"/api/runs/{run_id}/finish", json={}).status_code == 409
    late = http.post(f"/api/runs/{run_id}/log-batch", json={"metrics": points[:1]})
    assert late.status_code == 409 and "already failed" in late.json()["detail"]
    schema = http.get("/api/openapi.json").json()
    for path in ("/api/runs/{run_id}/log-batch", "/api/runs/{run_id}/finish",
                 "/api/runs/{run_id}/tracking"):
        assert path in schema["paths"]
    assert "post" in schema["paths"]["/api/runs"]
    assert "LogBatch" in schema["components"]["schemas"]


def test_scopes(live_server):
    admin = live_server.http()

    def key(scope: str) -> httpx.Client:
        made = admin.post("/api/v1/auth/keys", json={"name": scope, "permissions": [scope]})
        assert made.status_code == 201, made.text
        return httpx.Client(base_url=live_server.url, timeout=60,
                            headers={"Authorization": f"Bearer {made.json()['data']['key']}"})

    reader, trainer, other = key("read"), key("train"), key("train")
    assert reader.post("/api/runs", json={"name": "r"}).status_code == 403
    run_id = trainer.post("/api/runs", json={"name": "mine"}).json()["run_id"]
    batch = {"metrics": [{"key": "a", "value": 1, "step": 0}]}
    assert trainer.post(f"/api/runs/{run_id}/log-batch", json=batch).status_code == 200
    assert other.post(f"/api/runs/{run_id}/log-batch", json=batch).status_code == 403
    assert other.post(f"/api/runs/{run_id}/finish", json={}).status_code == 403
    assert reader.get(f"/api/runs/{run_id}/tracking").json()["name"] == "mine"
    assert trainer.post(f"/api/runs/{run_id}/finish", json={}).json()["state"] == "succeeded"


def test_a_pytorch_loop_logs_through_the_front_door(live_server, tmp_path):
    script = _script(tmp_path, "train_cnn.py", CNN_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], env=_env(live_server.home),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run_id, state = done.stdout.split()
    assert state == "succeeded"
    client = Client(live_server.url, live_server.token)
    tracked = client.tracked_run(run_id)
    assert tracked["config"] == {"lr": 0.05, "batch_size": 64, "epochs": 3, "arch": "cnn"}
    assert (tracked["name"], tracked["experiment"], tracked["tags"]) == (
        "cnn-random", "track-tests", ["cnn", "test"])
    assert tracked["state"] == "succeeded" and tracked["device"] == "cpu"
    assert tracked["epoch"] == 3  # the highest epoch logged
    assert run_id in [r["run_id"] for r in client.runs()["items"]]
    # the CLI, through the front door of the same home
    listed = json.loads(_workbench(live_server.home, "runs", "--json"))
    mine = next(r for r in listed if r["run_id"] == run_id)
    assert (mine["state"], mine["target"]) == ("succeeded", "external")
    rows = json.loads(_workbench(
        live_server.home, "sql", "--json",
        f"SELECT name, count(*) AS n, count(DISTINCT step) AS steps FROM metrics "
        f"WHERE run_id = '{run_id}' GROUP BY name ORDER BY name"))
    counts = {r["name"]: r["n"] for r in rows}
    assert counts["train/loss"] == counts["train/acc"] == 24  # 3 epochs x 8 steps
    assert counts["epoch_loss"] == 3
    assert counts["system/cpu_percent"] >= 2 and counts["system/rss_bytes"] >= 2
    assert counts["perf/flops_per_step"] == 1
    assert counts["perf/tflops"] >= 1 and counts["perf/step_time_s"] >= 1
    assert counts["grad_norm/0.weight"] >= 1 and counts["weight_norm/4.bias"] >= 1
    sql = client.sql(f"SELECT value FROM metrics WHERE run_id = '{run_id}' "
                     "AND name = 'perf/flops_per_step'")
    # forward + backward of the conv and linear layers: 3x the forward matmul FLOPs, roughly
    forward = 2 * 64 * (8 * 26 * 26 * 9 + 8 * 13 * 13 * 10)
    assert 2 * forward <= sql["rows"][0][0] <= 3 * forward
    hp = client.sql(f"SELECT hyperparams->>'$.config.lr' FROM runs WHERE run_id = '{run_id}'")
    assert float(hp["rows"][0][0]) == 0.05
    # the points streamed like engine events
    events = client.events(run_id, limit=10_000)["events"]
    assert sum(e["data"]["count"] for e in events if e["type"] == "metrics") == sum(
        counts.values())
    assert events[-1]["type"] == "run.completed"


def test_a_crashing_script_fails_its_run(live_server, tmp_path):
    script = _script(tmp_path, "crash.py", """
        import workbench.track as wb
        run = wb.init(name="crash", system_metrics=False)
        print(run.run_id, flush=True)
        wb.log({"x": 1.0})
        raise ValueError("diverged")
    """)
    done = subprocess.run([sys.executable, str(script)], env=_env(live_server.home),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "diverged" in done.stderr
    run = Client(live_server.url, live_server.token).get_run(done.stdout.split()[0])
    assert run["state"] == "failed" and run["error"] == "ValueError: diverged"
    assert run["metrics"] == {"x": 1.0}


def test_a_notebook_kernel_tracks_through_the_front_door(live_server):
    from tests.utils.kernel import Kernel

    kernel = Kernel(_env(live_server.home))
    try:
        out = kernel.run(
            "from workbench import notebook as wb\n"
            "with wb.init(name='from-a-cell', config={'k': 1}) as run:\n"
            "    for i in range(100):\n"
            "        wb.log({'loss': 1 / (i + 1)})\n"
            "print(run.run_id, run.state)\n")
    finally:
        kernel.close()
    run_id, state = out.split()
    assert state == "succeeded"
    client = Client(live_server.url, live_server.token)
    assert _count(client, run_id, "loss") == (100, 100)
    assert client.tracked_run(run_id)["config"] == {"k": 1}


def test_points_survive_a_killed_owner(server_factory, tmp_path):
    server = server_factory()
    stop, out = tmp_path / "stop", tmp_path / "out.json"
    script = _script(tmp_path, "survivor.py", SURVIVOR_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(stop), str(out)],
                            env=_env(server.home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id.startswith("r_"), proc.stderr.read() if proc.stderr else ""
        client = Client(server.url, server.token)
        deadline = time.monotonic() + 120
        while _count(client, run_id, "x")[0] < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        server.kill()  # SIGKILL, mid-run: batches in flight, the answer of one maybe lost
        time.sleep(2.0)  # the script goes on logging into its spool
        spool = server.home / "track" / "spool" / f"{run_id}.jsonl"
        assert spool.exists()
        restarted = server_factory(home=server.home)  # same home: a new port and credential
        client = Client(restarted.url, restarted.token)
        assert client.get_run(run_id)["state"] == "running"  # not failed "interrupted"
        time.sleep(1.0)
        stop.touch()
        assert proc.wait(180) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    result = json.loads(out.read_text())
    assert result["state"] == "succeeded" and result["spooled"] > 0
    steps = result["steps"]
    for key in ("x", "y"):
        assert _count(client, run_id, key) == (steps, steps)  # every point, none twice
    rows = client.sql(f"SELECT min(step), max(step), sum(value) FROM metrics "
                      f"WHERE run_id = '{run_id}' AND name = 'x'")["rows"]
    assert rows == [[0, steps - 1, float(steps * (steps - 1) // 2)]]
    assert not spool.exists()


def test_a_tracked_run_streams_live_to_notebook_charts(live_server):
    """A loop logging with ``wb.log`` while a notebook chart (``wb.watch(run_id)``'s
    ``NotebookRun``) follows the run through the server: points arrive while it runs."""
    pytest.importorskip("ipywidgets")
    import workbench.track as wb
    from workbench.notebook import NotebookRun

    client = Client(live_server.url, live_server.token)
    run = wb.init(name="live-chart", client=client, flush_interval=0.05, system_metrics=False)
    chart = NotebookRun(client, run.run_id, 0)

    def logged_until(n: int) -> None:
        # The figure is what a user sees, updated just after ``logged``: wait for it.
        deadline = time.monotonic() + 60
        while chart.points() < n and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        for step in range(5):
            wb.log({"train/loss": 1 / (step + 1), "train/acc": step / 10, "lr": 0.1}, step=step)
        logged_until(5)
        assert chart.state == "running" and chart.points() == 5  # live, before the finish
        assert chart.logged["train/loss"] == {s: 1 / (s + 1) for s in range(5)}
        assert "lr" not in chart.logged  # neither a loss nor an accuracy: not charted
        for step in range(5, 8):
            wb.log({"train/loss": 1 / (step + 1)}, step=step)
        logged_until(8)
        assert chart.points() == 8
    finally:
        wb.finish()
    assert chart.wait(60)["state"] == "succeeded" and chart.state == "succeeded"
    names = {t.name: len(t.x) for t in chart.figure.data}
    assert names["train/loss"] == 8 and names["train/acc"] == 5


def test_a_tracked_run_streams_live_to_the_apps_train_charts(tmp_path):
    """The app's Train view follows a tracked run from the bus like an engine run: logged
    names sorted onto its charts by step, system metrics on the system chart."""
    from workbench.service import Workbench
    from workbench.store import Store
    from workbench.ui.live import LiveRun
    from workbench.ui.state import AppState

    with Store(tmp_path / "wb.duckdb") as store:
        service = Workbench(store)
        run = service.create_external_run(name="tracked", device="cpu")
        live = LiveRun(AppState(service=service, run_id=run.run_id, defer_peak=True))
        assert live.run_state == "running" and live.epoch_points == 0
        service.log_metrics(run.run_id, {
            "key": ["loss", "acc", "system/cpu_percent", "system/rss_bytes", "loss"],
            "value": [2.0, 0.1, 50.0, 2.0**20 * 3, 1.5], "step": [0, 0, 0, 0, 1]})
        assert live.poll()  # drawn from the bus event, not re-read from the store
        figs = live.figures()
        loss = next(t for t in figs["loss"].data if t.name == "loss")
        assert list(loss.x) == [0, 1] and list(loss.y) == [2.0, 1.5]
        assert [t.name for t in figs["accuracy"].data] == ["acc"]
        system = {t.name: list(t.y) for t in figs["throughput"].data}
        assert system == {"system/cpu_percent": [50.0], "system/rss_bytes": [3.0]}  # MiB
        assert live.epoch_points == 2
        service.finish_external_run(run.run_id)
        live.poll()
        assert live.run_state == "succeeded"
        # reopened later: the same charts from the store
        again = LiveRun(AppState(service=service, run_id=run.run_id, defer_peak=True))
        assert {t.name for t in again.figures()["loss"].data} == {"loss"}
        assert again.epoch_points == 2
