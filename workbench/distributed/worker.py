"""``workbench worker``: a long-lived process that runs ranks of distributed jobs on request.

    workbench worker --port 5001 [--host 0.0.0.0] [--token-file F] [--max-ranks N]

A small JSON-over-HTTP service (standard library only, so a bare GPU box with torch can be a
worker):

- ``GET /health`` -> ``{"status": "ok", "device", "score_tflops", "jobs": [...], "max_ranks"}``;
  the score is a matmul throughput measured at start-up, used to balance pipeline stages. The
  only route that needs no token.
- ``POST /jobs`` with a rank assignment -> 202; the rank runs in a child process
  (:class:`~workbench.distributed.launch.RankProcess`) and rendezvouses with the coordinator's
  TCPStore named in the assignment. 422 for an invalid assignment (``job.timeout_s`` over
  24 h, ...), 503 (``Retry-After``) while ``--max-ranks`` ranks run already (default: the CPU
  count).
- ``GET /jobs/<job_id>`` -> ``{"state": "running" | "exited", "returncode", "log_tail"}``.
- ``DELETE /jobs/<job_id>`` stops it.

Every route but ``/health`` needs the worker's token, ``Authorization: Bearer <token>`` (401
otherwise): the worker runs what its coordinator asks, nobody else's. The token is
``--token-file``'s, else ``WORKBENCH_WORKER_TOKEN``, else ``$WORKBENCH_HOME/worker.token``,
generated (mode 0600) and printed on the first start without one, the way Jupyter prints its
token. The coordinator (:func:`call_worker`) presents ``WORKBENCH_WORKER_TOKENS`` (per worker:
``host:port=token,...``), else ``WORKBENCH_WORKER_TOKEN``, else -- to a worker on this machine
-- the home's ``worker.token``, so a server and workers that share a home need no setup.

:class:`RemoteRank` is the coordinator's side: a participant for
:func:`~workbench.distributed.coordinator.run_job` that reports the worker as gone when it stops
answering (killed, network down) or its rank process dies.

The rendezvous (torch's TCPStore) has no authentication of its own: keep the default
``--host 127.0.0.1`` unless the network is trusted.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..config import WORKER_TOKEN_ENV, worker_token_env, worker_tokens_env
from ..files import create_private_file
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


# ---- the worker's token ----------------------------------------------------------------------
TOKEN_FILE = "worker.token"  # in WORKBENCH_HOME: a generated token, for same-machine coordinators
MAX_TIMEOUT_S = 24 * 3600.0  # a job's rendezvous/collective timeout_s, at most
MAX_BODY_BYTES = 256 * 1024 * 1024  # a rank assignment (fine-tuning weights travel inline)
_KEEP_EXITED = 32  # finished jobs kept for GET /jobs/<id> (their logs), the oldest dropped


def home_token_path() -> Path:
    from ..config import get_settings

    return get_settings().home / TOKEN_FILE


class WorkerTokenError(ValueError):
    """The worker's token file cannot be read, or holds no token."""


def read_token(path: str | os.PathLike[str]) -> str:
    """The token in a file (its first line); :class:`WorkerTokenError` otherwise."""
    try:
        text = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise WorkerTokenError(f"cannot read the worker token file {path}: {exc}") from None
    if not text or not text[0].strip():
        raise WorkerTokenError(f"{path}: no worker token in this file")
    return text[0].strip()


def worker_token(token_file: str | None = None) -> tuple[str, str, bool]:
    """The worker's own token: ``(token, where it came from, generated now)``. From
    ``--token-file``, else ``WORKBENCH_WORKER_TOKEN``, else ``$WORKBENCH_HOME/worker.token``
    (generated there, mode 0600, on the first start without one)."""
    if token_file:
        return read_token(token_file), token_file, False
    if env := worker_token_env():
        return env, WORKER_TOKEN_ENV, False
    path = home_token_path()
    generated = False
    if not path.exists():
        create_private_file(path, secrets.token_urlsafe(32) + "\n")
        generated = True
    return read_token(path), str(path), generated


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def coordinator_token(host: str, port: int) -> str | None:
    """The token the coordinator presents to the worker at ``host:port``:
    ``WORKBENCH_WORKER_TOKENS`` (``host:port=token`` entries, comma or space separated) for
    that address, else ``WORKBENCH_WORKER_TOKEN``, else -- for a worker on this machine only --
    ``$WORKBENCH_HOME/worker.token`` (what a worker sharing the home generated)."""
    if token := worker_tokens_env().get(f"{host}:{port}".lower()):
        return token
    if env := worker_token_env():
        return env
    if _is_loopback(host):
        with contextlib.suppress(WorkerTokenError):
            return read_token(home_token_path())
    return None


# ---- the worker -------------------------------------------------------------------------------
class WorkerState:
    def __init__(self, *, token: str, max_ranks: int | None = None) -> None:
        self.token = token
        self.max_ranks = max(1, max_ranks or os.cpu_count() or 1)
        self.device, self.score = measure_score()
        self.jobs: dict[str, RankProcess] = {}
        self.lock = threading.Lock()

    def authorized(self, header: str | None) -> bool:
        scheme, _, presented = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), self.token.encode())

    def running(self) -> list[str]:
        return [j for j, p in self.jobs.items() if p.returncode is None]

    def start(self, work: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            job_id = str(work["job"]["job_id"])
            rank, _, port = int(work["rank"]), str(work["store_host"]), int(work["store_port"])
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": f"invalid assignment: missing or bad field {exc}"}
        problem = _check_assignment(work["job"], rank, port)
        if problem:
            return 422, {"error": f"invalid assignment: {problem}"}
        with self.lock:
            current = self.jobs.get(job_id)
            if current is not None and current.returncode is None:
                return 409, {"error": f"job {job_id} is already running here"}
            if len(self.running()) >= self.max_ranks:
                return 503, {"error": f"this worker already runs {self.max_ranks} rank "
                             f"process(es), its limit (--max-ranks); retry when one ends"}
            if current is not None:
                current.stop()
            self._forget_exited()
            self.jobs[job_id] = RankProcess(work)
        log.info("job %s: started rank %s", job_id, work["rank"])
        return 202, {"job_id": job_id, "rank": work["rank"]}

    def _forget_exited(self) -> None:
        exited = [j for j, p in self.jobs.items() if p.returncode is not None]
        for job_id in exited[: max(0, len(exited) - _KEEP_EXITED + 1)]:
            self.jobs.pop(job_id).stop()

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


def _check_assignment(job: Any, rank: int, store_port: int) -> str | None:
    """What is wrong with a rank assignment (the job's spec, rank, timeout), or None."""
    from pydantic import ValidationError

    from ..spec import error_messages
    from .job import DistJob

    timeout = job.get("timeout_s", 30.0) if isinstance(job, dict) else None
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT_S):
        return (f"job.timeout_s: must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], "
                f"got {timeout!r}")
    try:
        spec = DistJob.model_validate(job)
    except ValidationError as exc:
        return "; ".join("job." + m for m in error_messages(exc))
    if not 0 <= rank < spec.world_size:
        return f"rank: {rank} is not in [0, {spec.world_size})"
    if not 0 < store_port < 65536:
        return f"store_port: {store_port} is not a port"
    return None


def _handler(state: WorkerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def _send(self, code: int, body: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def _job_id(self) -> str | None:
            parts = self.path.strip("/").split("/")
            return parts[1] if len(parts) == 2 and parts[0] == "jobs" else None

        def _authorized(self) -> bool:
            """Every route but ``GET /health`` needs the worker's token (401 otherwise)."""
            if state.authorized(self.headers.get("Authorization")):
                return True
            self.close_connection = True  # any body stays unread
            self._send(401, {"error": "this worker needs its token: Authorization: Bearer "
                             "<token> (the coordinator sends WORKBENCH_WORKER_TOKEN)"},
                       {"WWW-Authenticate": 'Bearer realm="workbench worker"'})
            return False

        def do_GET(self) -> None:
            if self.path == "/health":
                with state.lock:
                    running = state.running()
                self._send(200, {"status": "ok", "device": state.device,
                                 "score_tflops": state.score, "jobs": running,
                                 "max_ranks": state.max_ranks})
                return
            if not self._authorized():
                return
            if (job_id := self._job_id()) is not None:
                self._send(*state.status(job_id))
            else:
                self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            if self.path != "/jobs":
                self.close_connection = True
                self._send(404, {"error": f"no route {self.path}"})
                return
            work = self._json_body()
            if work is None:
                return
            if not isinstance(work, dict):
                self._send(400, {"error": "the body must be a JSON rank assignment"})
                return
            code, body = state.start(work)
            self._send(code, body, {"Retry-After": "5"} if code == 503 else None)

        def _json_body(self) -> Any:
            self.close_connection = True  # on any refusal below the body stays unread
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type.lower() != "application/json":
                self._send(415, {"error": "the body must be application/json"})
                return None
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                self._send(411, {"error": "a Content-Length is required"})
                return None
            if not 0 <= length <= MAX_BODY_BYTES:
                self._send(413, {"error": f"the body is over {MAX_BODY_BYTES} bytes"})
                return None
            raw = self.rfile.read(length)
            self.close_connection = False
            try:
                return json.loads(raw or b"null")
            except (ValueError, RecursionError):
                self._send(400, {"error": "the body must be a JSON rank assignment"})
                return None

        def do_DELETE(self) -> None:
            if not self._authorized():
                return
            if (job_id := self._job_id()) is None:
                self._send(404, {"error": f"no route {self.path}"})
            else:
                self._send(*state.stop(job_id))

    return Handler


def serve_worker(host: str = "127.0.0.1", port: int = 5001,
                 ready: threading.Event | None = None, *, token: str | None = None,
                 token_file: str | None = None, max_ranks: int | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); running ranks are stopped on the way out.
    ``token`` (else :func:`worker_token`) is what every route but ``/health`` needs;
    ``max_ranks`` (default: the CPU count) caps the rank processes running at once."""
    import signal
    import sys

    if token:
        where, generated = "the caller", False
    else:
        token, where, generated = worker_token(token_file)
    state = WorkerState(token=token, max_ranks=max_ranks)
    server = ThreadingHTTPServer((host, port), _handler(state))
    server.daemon_threads = True

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)
    log.warning("workbench worker on http://%s:%d (%s, %.4f TFLOPS matmul), at most %d rank "
                "process(es)", host, port, state.device, state.score, state.max_ranks)
    if generated:  # Jupyter-style: shown once, when made; kept (0600) in the home for reuse
        print(f"workbench worker: generated its token (kept in {where}); coordinators on "
              f"other machines need it:\n  {WORKER_TOKEN_ENV}={token}", file=sys.stderr, flush=True)
    else:
        print(f"workbench worker: jobs need the token from {where}", file=sys.stderr, flush=True)
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
                timeout_s: float = 5.0, *, token: str | None = None,
                authenticate: bool = True) -> dict[str, Any]:
    """One JSON request to a worker, with its token (``token``, else
    :func:`coordinator_token`); raises :class:`WorkerUnreachable` or ``RuntimeError`` (the
    worker's own error message)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if authenticate and (token := token or coordinator_token(host, port)):
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=data, method=method,
                                     headers=headers)
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
    """``GET /health`` (public: no token is sent, so probing an address leaks none)."""
    return call_worker(host, port, "GET", "/health", timeout_s=timeout_s, authenticate=False)


class RemoteRank:
    """A coordinator participant: one rank on a ``workbench worker``."""

    def __init__(self, host: str, port: int, name: str | None = None, *,
                 check_every_s: float = 0.5, token: str | None = None):
        self.host, self.port = host, port
        self.token = token  # None: coordinator_token(host, port) at each call
        self.name = name or f"device {host}:{port}"
        self.job_id: str | None = None
        self.check_every_s = check_every_s
        self._last_check = 0.0
        self._state: dict[str, Any] = {"state": "running"}
        self._gone: str | None = None

    def start(self, work: dict[str, Any]) -> None:
        self.job_id = str(work["job"]["job_id"])
        call_worker(self.host, self.port, "POST", "/jobs", work, token=self.token)

    def _refresh(self) -> None:
        if self._gone or self.job_id is None:
            return
        now = time.monotonic()
        if now - self._last_check < self.check_every_s:
            return
        self._last_check = now
        try:
            self._state = call_worker(self.host, self.port, "GET", f"/jobs/{self.job_id}",
                                      timeout_s=max(2.0, self.check_every_s * 4),
                                      token=self.token)
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
            call_worker(self.host, self.port, "DELETE", f"/jobs/{self.job_id}", timeout_s=2.0,
                        token=self.token)
        except (WorkerUnreachable, RuntimeError):
            pass
