"""Restart persistence: everything survives a restart; a run that was training when the server
was SIGKILLed is ``failed`` "interrupted: the store's owner (pid N, ...) died" with its finished
epochs kept; queued runs resume."""

from __future__ import annotations

import time

from tests.utils.factories import mlp, quick_hyperparams


def _wait(http, run_id, states, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = http.get(f"/api/runs/{run_id}").json()
        if run["state"] in states:
            return run
        time.sleep(0.2)
    raise AssertionError(f"{run_id} never reached {states}: {run}")


def test_restart_after_sigkill_keeps_everything(server_factory):
    first = server_factory(workers=1)
    with first.http() as http:
        model = http.post("/api/models", json={"architecture": mlp(32),
                                               "hyperparams": quick_hyperparams(epochs=2)}).json()
        done = http.post(f"/api/models/{model['model_id']}/train",
                         json={"limit": 1000}).json()
        done = _wait(http, done["run_id"], {"succeeded"})
        # A long run (small batches, many epochs), and one queued behind it (1 worker).
        long = http.post(f"/api/models/{model['model_id']}/train",
                         json={"hyperparams": {"epochs": 500, "batch_size": 8}}).json()
        queued = http.post(f"/api/models/{model['model_id']}/train",
                           json={"hyperparams": {"epochs": 1}, "limit": 500}).json()
        deadline = time.monotonic() + 120
        while (run := http.get(f"/api/runs/{long['run_id']}").json())["epoch"] < 2:
            assert run["state"] in ("queued", "running") and time.monotonic() < deadline, run
            time.sleep(0.2)
        assert http.get(f"/api/runs/{queued['run_id']}").json()["state"] == "queued"
    first.kill()  # SIGKILL: no shutdown code runs

    second = server_factory(home=first.home, workers=1)
    with second.http() as http:
        assert http.get(f"/api/models/{model['model_id']}").json()["architecture"] == mlp(32)
        again = http.get(f"/api/runs/{done['run_id']}").json()
        assert again["state"] == "succeeded" and again["metrics"] == done["metrics"]
        params = http.get(f"/api/params/{done['param_id']}")
        assert params.status_code == 200 and params.json()["size_bytes"] > 0

        killed = http.get(f"/api/runs/{long['run_id']}").json()
        # The next owner names the one that died (workbench.frontdoor: the owner file).
        assert killed["state"] == "failed" and killed["error"].startswith("interrupted: the "
                                                                          "store's owner (pid "), killed
        assert killed["error"].endswith("died"), killed
        assert killed["epoch"] >= 2 and killed["metrics"]["val_accuracy"] > 0.1
        assert "param_id" not in killed

        resumed = _wait(http, queued["run_id"], {"succeeded", "failed"})
        assert resumed["state"] == "succeeded", resumed
        items = http.get(f"/api/models/{model['model_id']}/runs").json()["items"]
        assert [r["run_id"] for r in items] == [done["run_id"], long["run_id"], queued["run_id"]]

        # A graceful stop (SIGTERM) fails a live run with its reason instead of losing it.
        live = http.post(f"/api/models/{model['model_id']}/train",
                         json={"hyperparams": {"epochs": 500, "batch_size": 8}}).json()
        _wait(http, live["run_id"], {"running"})
    # uvicorn shuts down gracefully (closing the service), then re-raises the signal.
    assert second.stop() in (0, -15)
    third = server_factory(home=first.home)
    with third.http() as http:
        after = http.get(f"/api/runs/{live['run_id']}").json()
    assert after["state"] == "failed" and "server shut down" in after["error"], after
