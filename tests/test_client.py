"""``workbench.client.Client`` against a real server: the minimal flow, errors, retries."""

from __future__ import annotations

import http.server
import json
import threading

import httpx
import numpy as np
import pytest

from tests.utils.factories import mlp, mnist_test, quick_hyperparams
from workbench.client import ApiError, Client


def test_minimal_flow_through_client(live_server, capsys):
    x, y = mnist_test()
    with Client(live_server.url, live_server.token) as wb:
        assert wb.health()["status"] == "ok"
        model = wb.create_model(mlp(64), quick_hyperparams())
        accepted = wb.train(model["model_id"])
        assert accepted["status"] == "queued"
        run = wb.wait(accepted["run_id"], timeout=180, poll=0.2)
        assert run["state"] == "succeeded", run
        assert "epoch" in capsys.readouterr().err  # the tqdm bar
        # numpy -> binary float32 body; lists -> JSON body; same answers.
        binary = wb.infer(run["param_id"], x[:512])
        as_json = wb.infer(run["param_id"], x[:512].tolist())
        assert binary["outputs"]["labels"] == as_json["outputs"]["labels"]
        labels = binary["outputs"]["labels"] + wb.infer(run["param_id"], x[512:])["outputs"]["labels"]
        accuracy = float(np.mean(np.array(labels) == y))
        assert abs(accuracy - run["metrics"]["val_accuracy"]) <= 0.03
        params = wb.params(run["param_id"])
        assert params["model_id"] == model["model_id"]
        assert [r["run_id"] for r in wb.iter_runs(model["model_id"], page_size=1)] == [run["run_id"]]


def test_client_raises_api_errors(live_server):
    with Client(live_server.url, live_server.token) as wb:
        with pytest.raises(ApiError) as err:
            wb.get_run("r_missing")
        assert err.value.status == 404
        bad = mlp(32)
        bad["layers"][0]["in"] = 700
        with pytest.raises(ApiError) as err:
            wb.create_model(bad)
        assert err.value.status == 400 and "input_size" in err.value.errors[0]
    with Client(live_server.url, "wrong-key") as wb, pytest.raises(ApiError) as err:
        wb.get_run("r_missing")
    assert err.value.status == 401


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first two requests, then 200: a real HTTP server on loopback."""

    calls = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).calls += 1
        status, body = (503, {"detail": "busy"}) if self.calls <= 2 else (200, {"status": "ok"})
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_client_retries_with_backoff():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with Client(url, "k", retries=3, backoff=0.01) as wb:
            assert wb.health() == {"status": "ok"}
        assert _Flaky.calls == 3
    finally:
        server.shutdown()
        server.server_close()
    # Nothing listening: connection errors are retried, then raised.
    from tests.utils.server import free_port

    with Client(f"http://127.0.0.1:{free_port()}", "k", retries=2, backoff=0.01) as wb:
        with pytest.raises(httpx.ConnectError):
            wb.health()
