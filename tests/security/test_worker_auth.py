"""``workbench worker`` accepts jobs only from its coordinator, against real worker processes.

It had no authentication: anyone reaching its port started one rank process per
``POST /jobs``, with no cap and any ``timeout_s`` (6 requests: 6 processes, +785 MB). Now every
route but ``/health`` needs its token (401), ``timeout_s`` is validated (422 past 24 h), and
rank processes are capped (``--max-ranks``; 503 with Retry-After past it).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from tests.utils.factories import mlp
from tests.utils.server import free_port
from workbench import config
from workbench.distributed import worker as wk

TOKEN = "wb-worker-auth-test-token"


class Worker:
    def __init__(self, port: int, process: subprocess.Popen, log: Path, home: Path):
        self.port, self.process, self.log_path, self.home = port, process, log, home
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_worker(home: Path, *args: str, token: str | None = TOKEN) -> Worker:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1"}
    env.pop(config.WORKER_TOKEN_ENV, None)
    if token is not None:
        env[config.WORKER_TOKEN_ENV] = token
    log = home / f"worker-{port}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", "--port",
                                    str(port), *args], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    worker = Worker(port, process, log, home)
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            return worker  # the caller looks at why
        try:
            if httpx.get(worker.url + "/health", timeout=2).status_code == 200:
                return worker
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            worker.stop()
            raise AssertionError(f"worker did not start:\n{worker.log()}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Iterator[Worker]:
    w = start_worker(tmp_path_factory.mktemp("worker-auth"), "--max-ranks", "1")
    try:
        yield w
    finally:
        w.stop()


def _call(worker: Worker, method: str, path: str, body: object = None, *,
          token: str | None = TOKEN, raw: bytes | None = None,
          headers: dict[str, str] | None = None) -> httpx.Response:
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    return httpx.request(method, worker.url + path, content=content, headers=h, timeout=30)


def assignment(job_id: str, *, timeout_s: object = 60.0, rank: int = 0) -> dict:
    """A valid one-rank job whose rank waits (up to ``timeout_s``) for a rendezvous nobody
    holds: a rank process that stays alive, without training anything."""
    from workbench.distributed.job import DistJob
    from workbench.train.job import RunSpec

    job = DistJob(job_id=job_id, strategy="ddp", world_size=1, timeout_s=60.0,
                  run=RunSpec(run_id=f"r_{job_id}", architecture=mlp(16), offline=True,
                              limit=100)).model_dump(mode="json")
    job["timeout_s"] = timeout_s
    return {"job": job, "rank": rank, "store_host": "127.0.0.1", "store_port": free_port()}


def _rank_processes(worker: Worker) -> int:
    """Child processes of the worker running a rank (from /proc)."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == worker.process.pid and b"workbench.distributed.rank" in cmd:
            count += 1
    return count


def test_every_route_but_health_needs_the_token(worker, record_property):
    health = httpx.get(worker.url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["jobs"] == []
    assert health.json()["max_ranks"] == 1
    refused = 0
    bad_headers = [None, "wrong-token", TOKEN + "x", TOKEN[:-1], "x" * 200]
    for method, path in (("POST", "/jobs"), ("GET", "/jobs/j1"), ("DELETE", "/jobs/j1"),
                         ("GET", "/nope"), ("POST", "/nope"), ("DELETE", "/nope")):
        for token in bad_headers:
            r = _call(worker, method, path, assignment("j1"), token=token)
            assert r.status_code == 401, (method, path, token, r.status_code, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "token" in r.json()["error"]
            refused += 1
        for header in (f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer", TOKEN):
            r = _call(worker, method, path, assignment("j1"), token=None,
                      headers={"Authorization": header})
            assert r.status_code == 401
            refused += 1
    assert httpx.get(worker.url + "/health", timeout=30).json()["jobs"] == []
    assert _rank_processes(worker) == 0
    record_property("unauthenticated_worker_requests_refused", refused)
    # With the token: the routes answer (an unknown job is a 404, not a 401).
    assert _call(worker, "GET", "/jobs/j1").status_code == 404
    assert _call(worker, "DELETE", "/jobs/j1").status_code == 404


def test_assignments_are_validated(worker):
    for timeout in (10**9, 24 * 3600 + 1, 0, -1, "60", True, None, [60]):
        r = _call(worker, "POST", "/jobs", assignment("j2", timeout_s=timeout))
        assert r.status_code == 422, (timeout, r.status_code, r.text)
        assert "timeout_s" in r.json()["error"]
    for literal in (b"NaN", b"Infinity", b"1e999"):
        raw = json.dumps(assignment("j2")).replace('"timeout_s": 60.0',
                                                   '"timeout_s": ' + literal.decode())
        r = _call(worker, "POST", "/jobs", raw=raw.encode())
        assert r.status_code == 422 and "timeout_s" in r.json()["error"], r.text
    bad = assignment("j2")
    bad["job"]["world_size"] = 0
    assert _call(worker, "POST", "/jobs", bad).status_code == 422
    assert _call(worker, "POST", "/jobs", assignment("j2", rank=3)).status_code == 422
    assert _call(worker, "POST", "/jobs", raw=b"{not json").status_code == 400
    assert _call(worker, "POST", "/jobs", assignment("j2"),
                 headers={"Content-Type": "text/plain"}).status_code == 415
    assert httpx.get(worker.url + "/health", timeout=30).json()["jobs"] == []
    assert _rank_processes(worker) == 0


def test_rank_processes_are_capped(worker, record_property):
    first = _call(worker, "POST", "/jobs", assignment("cap-0"))
    assert first.status_code == 202, first.text
    try:
        busy = 0
        for i in range(1, 6):  # the finding's 6 requests
            r = _call(worker, "POST", "/jobs", assignment(f"cap-{i}"))
            assert r.status_code == 503, r.text
            assert int(r.headers["retry-after"]) > 0 and "--max-ranks" in r.json()["error"]
            busy += 1
        assert httpx.get(worker.url + "/health", timeout=30).json()["jobs"] == ["cap-0"]
        assert _rank_processes(worker) == 1
        record_property("rank_requests_refused_past_the_cap", busy)
    finally:
        assert _call(worker, "DELETE", "/jobs/cap-0").status_code == 200
    # the slot is free again
    again = _call(worker, "POST", "/jobs", assignment("cap-6"))
    assert again.status_code == 202, again.text
    assert _call(worker, "DELETE", "/jobs/cap-6").status_code == 200
    deadline = time.monotonic() + 20
    while _rank_processes(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _rank_processes(worker) == 0


def test_the_coordinator_presents_the_token(worker, monkeypatch):
    monkeypatch.setenv(config.WORKER_TOKEN_ENV, TOKEN)
    monkeypatch.delenv(config.WORKER_TOKENS_ENV, raising=False)
    rank = wk.RemoteRank("127.0.0.1", worker.port)
    rank.start(assignment("coord-1"))
    try:
        assert wk.call_worker("127.0.0.1", worker.port, "GET", "/jobs/coord-1")["state"] in (
            "running", "exited")
    finally:
        rank.stop()
    # a per-worker token wins over the global one
    monkeypatch.setenv(config.WORKER_TOKEN_ENV, "the-global-one")
    monkeypatch.setenv(config.WORKER_TOKENS_ENV, f"10.0.0.9:1=other, 127.0.0.1:{worker.port}={TOKEN}")
    assert wk.coordinator_token("127.0.0.1", worker.port) == TOKEN
    with pytest.raises(RuntimeError, match="404|no job"):
        wk.call_worker("127.0.0.1", worker.port, "GET", "/jobs/none")
    assert wk.coordinator_token("10.0.0.9", 1) == "other"
    assert wk.coordinator_token("10.0.0.8", 1) == "the-global-one"
    with pytest.raises(RuntimeError, match="token"):
        wk.RemoteRank("127.0.0.1", worker.port, token="wrong").start(assignment("coord-2"))


def test_health_probes_never_carry_the_token(monkeypatch):
    """``worker_health`` probes addresses users give (``global_node_urls``): no token goes out."""
    seen: list[str | None] = []

    class Capture(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            raw = b'{"status": "ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(config.WORKER_TOKEN_ENV, TOKEN)
        assert wk.worker_health("127.0.0.1", server.server_address[1])["status"] == "ok"
    finally:
        server.shutdown()
    assert seen == [None]


def test_a_generated_token_is_printed_once_and_kept_private(tmp_path):
    home = tmp_path / "fresh-home"
    first = start_worker(home, token=None)
    try:
        path = home / wk.TOKEN_FILE
        token = path.read_text().strip()
        assert len(token) >= 40 and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert f"{config.WORKER_TOKEN_ENV}={token}" in first.log()
        assert _call(first, "POST", "/jobs", {"job": {}}, token=None).status_code == 401
        r = _call(first, "POST", "/jobs", {"job": {}}, token=token)
        assert r.status_code in (400, 422), r.text  # past the token
        # a coordinator sharing the home finds it (a worker on this machine only)
        os.environ.pop(config.WORKER_TOKENS_ENV, None)
        saved = os.environ.pop(config.WORKER_TOKEN_ENV, None)
        old_home = os.environ["WORKBENCH_HOME"]
        from workbench.config import get_settings

        try:
            os.environ["WORKBENCH_HOME"] = str(home)
            get_settings.cache_clear()
            assert wk.coordinator_token("127.0.0.1", first.port) == token
            assert wk.coordinator_token("203.0.113.7", first.port) is None
        finally:
            os.environ["WORKBENCH_HOME"] = old_home
            if saved is not None:
                os.environ[config.WORKER_TOKEN_ENV] = saved
            get_settings.cache_clear()
    finally:
        first.stop()
    again = start_worker(home, token=None)
    try:
        assert token not in again.log() and str(home / wk.TOKEN_FILE) in again.log()
        assert _call(again, "GET", "/jobs/x", token=token).status_code == 404
    finally:
        again.stop()


def test_token_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    w = start_worker(tmp_path / "h1", "--token-file", str(secret), token="ignored-env")
    try:
        assert _call(w, "GET", "/jobs/x", token="from-a-file").status_code == 404
        assert _call(w, "GET", "/jobs/x", token="ignored-env").status_code == 401
    finally:
        w.stop()
    missing = start_worker(tmp_path / "h2", "--token-file", str(tmp_path / "nope"))
    assert missing.process.wait(30) == 1
    assert "worker token file" in missing.log()
