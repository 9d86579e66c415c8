"""Pause, resume, move and automatic resume on a real server (``workbench serve``), on CPU:
a run paused on ``local`` and resumed on ``local-kernel`` ends with exactly the per-epoch
metrics of an uninterrupted run; so does a run whose owner was SIGKILLed mid-run with
automatic resume on; the errors say why (409/422/404)."""

from __future__ import annotations

import pytest

from tests.utils import equal_runs
from tests.utils.equal_runs import history, trained_here
from tests.utils.factories import mlp, quick_hyperparams
from tests.utils.v1 import wait_run

pytestmark = pytest.mark.timeout(900)  # servers, workers and a kernel on a loaded machine

# Small batches (~60 steps per epoch) and 40 epochs: a pause asked, or a kill made, once epoch 1
# has ended lands seconds before the last epoch, even with the fast CPU step on a quick machine.
HP = quick_hyperparams(epochs=40, batch_size=16)
TRAIN = {"limit": 1200, "device": "cpu"}



@pytest.fixture(scope="module")
def straight() -> list[tuple]:
    """The uninterrupted run every resumed one must equal (trained here with the threads a
    worker or kernel trains with)."""
    return trained_here(mlp(32), HP, limit=TRAIN["limit"])


def wait_until(http, run_id: str, condition, timeout: float = 400) -> dict:
    return equal_runs.wait_until(http, run_id, condition, timeout)


def has_checkpoint(http, run_id: str) -> bool:
    events = http.get(f"/api/runs/{run_id}/events").json()["events"]
    return any(e["type"] == "checkpoint" for e in events)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.utils.server import start_server

    srv = start_server(tmp_path_factory.mktemp("pause-home"), workers=2, timeout=400)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def model_id(server):
    with server.http() as http:
        return http.post("/api/models", json={"architecture": mlp(32),
                                              "hyperparams": HP}).json()["model_id"]


def test_paused_on_local_resumed_on_local_kernel_equals_an_uninterrupted_run(
        server, model_id, straight):
    with server.http() as http:
        run_id = http.post(f"/api/models/{model_id}/train", json=TRAIN).json()["run_id"]
        wait_until(http, run_id, lambda r: r["epoch"] >= 1)
        paused = http.post(f"/api/runs/{run_id}/pause")
        assert paused.status_code == 202, paused.text
        run = wait_until(http, run_id, lambda r: r["state"] == "paused")
        at = run["epoch"]
        assert 1 <= at < HP["epochs"], run
        assert http.post(f"/api/runs/{run_id}/pause").json()["state"] == "paused"  # idempotent

        moved = http.post(f"/api/runs/{run_id}/resume", json={"target": "local-kernel"})
        assert moved.status_code == 202, moved.text
        assert moved.json()["target"] == "local-kernel" and moved.json()["epoch"] == at
        done = wait_run(http, run_id, timeout=400)
        assert done["state"] == "succeeded" and done["target"] == "local-kernel", done
        assert done["epoch"] == HP["epochs"]
        types = [e["type"] for e in http.get(f"/api/runs/{run_id}/events").json()["events"]]
        assert types.count("run.paused") == 1 and types.count("run.resumed") == 1
        assert history(http, run_id) == straight

        # a finished run neither pauses nor resumes, and says why
        again = http.post(f"/api/runs/{run_id}/resume")
        assert again.status_code == 409, again.text
        assert "is succeeded: only a paused run can be resumed" in again.json()["errors"][0]
        refused = http.post(f"/api/runs/{run_id}/pause")
        assert refused.status_code == 409 and "already succeeded" in refused.json()["errors"][0]


def test_resume_errors(server, model_id):
    with server.http() as http:
        missing = http.post("/api/runs/r_nope/resume")
        assert missing.status_code == 404, missing.text
        bad = http.post("/api/runs/r_nope/resume", json={"target": "", "extra": 1})
        assert bad.status_code == 422, bad.text
        run_id = http.post(f"/api/models/{model_id}/train",
                           json={**TRAIN, "hyperparams": {"epochs": 200}}).json()["run_id"]
        wait_until(http, run_id, lambda r: r["state"] == "running")
        live = http.post(f"/api/runs/{run_id}/resume")
        assert live.status_code == 409 and "pause it first" in live.json()["errors"][0]
        http.post(f"/api/runs/{run_id}/pause")
        wait_until(http, run_id, lambda r: r["state"] == "paused")
        unknown = http.post(f"/api/runs/{run_id}/resume", json={"target": "mars"})
        assert unknown.status_code == 422 and "unknown target 'mars'" in unknown.text
        assert http.get(f"/api/runs/{run_id}").json()["state"] == "paused"  # unharmed
        cancelled = http.post(f"/api/runs/{run_id}/cancel").json()
        assert cancelled["state"] == "cancelled", cancelled


def test_sigkilled_owner_with_auto_resume_continues_from_the_checkpoint(
        server, model_id, straight, server_factory):
    """Last in the module: it kills the module's server."""
    with server.http() as http:
        run_id = http.post(f"/api/models/{model_id}/train",
                           json={**TRAIN, "checkpoint_every": 1, "auto_resume": True}
                           ).json()["run_id"]
        wait_until(http, run_id, lambda r: has_checkpoint(http, run_id))
    server.kill()  # SIGKILL: the owner (and so its worker) dies mid-run

    second = server_factory(home=server.home, workers=1, timeout=400)
    with second.http() as http:
        done = wait_run(http, run_id, timeout=400)
        assert done["state"] == "succeeded", done
        events = http.get(f"/api/runs/{run_id}/events").json()["events"]
        paused = [e["data"] for e in events if e["type"] == "run.paused"]
        assert paused and paused[0]["auto_resume"] and "owner" in paused[0]["reason"]
        resumed = [e["data"] for e in events if e["type"] == "run.resumed"]
        assert len(resumed) == 1 and resumed[0]["from_epoch"] >= 1
        assert history(http, run_id) == straight
