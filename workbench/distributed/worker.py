"""``workbench worker``: a long-lived process that runs ranks of distributed jobs on request.

    workbench worker --port 5001 [--host 0.0.0.0]

A small JSON-over-HTTP service (standard library only, so a bare GPU box with torch can be a
worker):

- ``GET /health`` -> ``{"status": "ok", "device", "score_tflops", "jobs": [...]}``; the score
  is a matmul throughput measured at start-up, used to balance pipeline stages.
- ``POST /jobs`` with a rank assignment -> 202; the rank runs in a child process
  (:class:`~workbench.distributed.launch.RankProcess`) and rendezvouses with the coordinator's
  TCPStore named in the assignment.
- ``GET /jobs/<job_id>`` -> ``{"state": "running" | "exited", "returncode", "log_tail"}``.
- ``DELETE /jobs/<job_id>`` stops it.

:class:`RemoteRank` is the coordinator's side: a participant for
:func:`~workbench.distributed.coordinator.run_job` that reports the worker as gone when it stops
answering (killed, network down) or its rank process dies.

The worker runs only workbench training, but anyone who can reach its port can start that:
keep the default ``--host 127.0.0.1`` unless the network is trusted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .launch import RankProcess, describe_exit

log = logging.getLogger(__name__)


def measure_score(seconds: float = 0.3, size: int = 512) -> tuple[str, float]:
    """(device, achieved matmul TFLOPS) of this machine's training device."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    (a @ b).sum().item()  # warm up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return str(device), 2 * size**3 * n / (time.perf_counter() - t0) / 1e12


class WorkerState:
    def __init__(self) -> None:
        self.device, self.score = measure_score()
        self.jobs: dict[str, RankProcess] = {}
        self.lock = threading.Lock()

    def start(self, work: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            job_id = str(work["job"]["job_id"])
            int(work["rank"]), str(work["store_host"]), int(work["store_port"])
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": f"invalid assignment: missing or bad field {exc}"}
        with self.lock:
            current = self.jobs.get(job_id)
            if current is not None and current.returncode is None:
                return 409, {"error": f"job {job_id} is already running here"}
            if current is not None:
                current.stop()
            self.jobs[job_id] = RankProcess(work)
        log.info("job %s: started rank %s", job_id, work["rank"])
        return 202, {"job_id": job_id, "rank": work["rank"]}

    def status(self, job_id: str) -> tuple[int, dict[str, Any]]:
        proc = self.jobs.get(job_id)
        if proc is None:
            return 404, {"error": f"no job {job_id} on this worker"}
        code = proc.returncode
        return 200, {"job_id": job_id, "state": "running" if code is None else "exited",
                     "returncode": code, "log_tail": proc.log_tail()}

    def stop(self, job_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            proc = self.jobs.pop(job_id, None)
        if proc is None:
            return 404, {"error": f"no job {job_id} on this worker"}
        proc.stop()
        return 200, {"job_id": job_id, "state": "stopped"}

    def stop_all(self) -> None:
        with self.lock:
            jobs, self.jobs = list(self.jobs.values()), {}
        for proc in jobs:
            proc.stop()


def _handler(state: WorkerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def _send(self, code: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _job_id(self) -> str | None:
            parts = self.path.strip("/").split("/")
            return parts[1] if len(parts) == 2 and parts[0] == "jobs" else None

        def do_GET(self) -> None:
            if self.path == "/health":
                with state.lock:
                    running = [j for j, p in state.jobs.items() if p.returncode is None]
                self._send(200, {"status": "ok", "device": state.device,
                                 "score_tflops": state.score, "jobs": running})
            elif (job_id := self._job_id()) is not None:
                self._send(*state.status(job_id))
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/jobs":
                self._send(404, {"error": f"no route {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                work = json.loads(self.rfile.read(length) or b"null")
            except ValueError:
                self._send(400, {"error": "the body must be a JSON rank assignment"})
                return
            if not isinstance(work, dict):
                self._send(400, {"error": "the body must be a JSON rank assignment"})
                return
            self._send(*state.start(work))

        def do_DELETE(self) -> None:
            if (job_id := self._job_id()) is None:
                self._send(404, {"error": f"no route {self.path}"})
            else:
                self._send(*state.stop(job_id))

    return Handler


def serve_worker(host: str = "127.0.0.1", port: int = 5001,
                 ready: threading.Event | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); running ranks are stopped on the way out."""
    import signal

    state = WorkerState()
    server = ThreadingHTTPServer((host, port), _handler(state))
    server.daemon_threads = True

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
    log.warning("workbench worker on http://%s:%d (%s, %.4f TFLOPS matmul)", host, port,
                state.device, state.score)
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.stop_all()


# ---- the coordinator's side ----------------------------------------------------------------
class WorkerUnreachable(RuntimeError):
    """The worker does not answer (not started, wrong address, killed, network down)."""


def call_worker(host: str, port: int, method: str, path: str, body: Any = None,
                timeout_s: float = 5.0) -> dict[str, Any]:
    """One JSON request to a worker; raises :class:`WorkerUnreachable` or ``RuntimeError``
    (the worker's own error message)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            message = str(exc)
        raise RuntimeError(f"worker {host}:{port}: {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WorkerUnreachable(f"worker {host}:{port} is unreachable: {reason}") from exc


def worker_health(host: str, port: int, timeout_s: float = 5.0) -> dict[str, Any]:
    return call_worker(host, port, "GET", "/health", timeout_s=timeout_s)


class RemoteRank:
    """A coordinator participant: one rank on a ``workbench worker``."""

    def __init__(self, host: str, port: int, name: str | None = None, *, check_every_s: float = 0.5):
        self.host, self.port = host, port
        self.name = name or f"device {host}:{port}"
        self.job_id: str | None = None
        self.check_every_s = check_every_s
        self._last_check = 0.0
        self._state: dict[str, Any] = {"state": "running"}
        self._gone: str | None = None

    def start(self, work: dict[str, Any]) -> None:
        self.job_id = str(work["job"]["job_id"])
        call_worker(self.host, self.port, "POST", "/jobs", work)

    def _refresh(self) -> None:
        if self._gone or self.job_id is None:
            return
        now = time.monotonic()
        if now - self._last_check < self.check_every_s:
            return
        self._last_check = now
        try:
            self._state = call_worker(self.host, self.port, "GET", f"/jobs/{self.job_id}",
                                      timeout_s=max(2.0, self.check_every_s * 4))
        except WorkerUnreachable as exc:
            self._gone = f"it stopped answering ({exc})"
        except RuntimeError as exc:
            self._gone = str(exc)

    def gone(self) -> str | None:
        self._refresh()
        if self._gone:
            return self._gone
        code = self._state.get("returncode")
        if self._state.get("state") == "exited" and code not in (0, None):
            tail = (self._state.get("log_tail") or "").strip().splitlines()
            return describe_exit(int(code)) + (f" ({tail[-1]})" if tail else "")
        return None

    def finished(self) -> bool:
        self._refresh()
        return self._gone is not None or self._state.get("state") == "exited"

    def stop(self) -> None:
        if self.job_id is None or self._gone:
            return
        try:
            call_worker(self.host, self.port, "DELETE", f"/jobs/{self.job_id}", timeout_s=2.0)
        except (WorkerUnreachable, RuntimeError):
            pass
