"""A real ``workbench serve`` subprocess on a free 127.0.0.1 port, for end-to-end tests.

    server = start_server(tmp_path / "home")     # waits for /api/health
    httpx.get(server.url + "/api/runs/...", headers=server.headers)
    server.stop()                                 # SIGTERM (graceful); server.kill() = SIGKILL
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    home: Path
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app_url(self) -> str:
        """The app's login link, as ``workbench serve`` prints it (sets the cookie, redirects)."""
        return f"{self.url}/?token={self.token}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def http(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60, **kwargs)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM and wait (uvicorn shuts down gracefully); SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the server process only (its workers notice their stdin closing)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


def start_server(home: Path, *, token: str = TOKEN, workers: int = 2,
                 extra_env: dict[str, str] | None = None, timeout: float = 90) -> LiveServer:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "WORKBENCH_HOME": str(home),
        "WORKBENCH_TOKEN": token,
        "WORKBENCH_OFFLINE": "1",
        "WORKBENCH_WORKERS": str(workers),
        **(extra_env or {}),
    }
    log_path = home / f"server-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "workbench.cli", "serve", "--port", str(port),
             "--workers", str(workers)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = LiveServer(home, port, token, process, log_path, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"workbench serve exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/api/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"workbench serve did not become ready in {timeout} s:\n{server.log()}")
