"""Local servers for notebooks and tests: a headless Jupyter, and the workbench server.

    with LocalJupyter(app="lab", env={"WORKBENCH_HOME": home}) as jp:
        httpx.get(f"{jp.url}api/status", headers=jp.auth)


``LocalJupyter`` keeps everything it writes in a temporary folder and runs in its own process
group, so stopping it also stops what it spawned (kernels, the proxied app); the tests use it
for a real JupyterLab, the remote-kernel notebook for a server that stands in for a GPU box.
(Notebooks reach the workbench itself through the front door: ``workbench.frontdoor.connect``.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

import httpx

APPS = {"lab": "jupyterlab", "server": "jupyter_server"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalJupyter:
    """A ``jupyter lab`` (or bare ``jupyter server``) on loopback, with a token."""

    def __init__(
        self, *, app: Literal["lab", "server"] = "lab", root_dir: str | Path | None = None,
        env: dict[str, str] | None = None, python: str = sys.executable,
        extra_args: list[str] | None = None, startup_timeout: float = 60.0,
    ):
        self.app, self.python, self.startup_timeout = app, python, startup_timeout
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="workbench-jupyter-")
        tmp = Path(self._tmp.name)
        self.root_dir = Path(root_dir) if root_dir else tmp / "root"
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "jupyter.log"
        # Runtime, user config and lab settings in the temp folder: nothing leaks into ~/.jupyter.
        self.env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "lab-workspaces"),
            "JUPYTER_PLATFORM_DIRS": "1",
            **(env or {}),
        }
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def auth(self) -> dict[str, str]:
        """Jupyter's own token header."""
        return {"Authorization": f"token {self.token}"}

    def command(self) -> list[str]:
        return [
            self.python, "-m", APPS[self.app], "--no-browser", "--ServerApp.open_browser=False",
            "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0", "--allow-root",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
            *self.extra_args,
        ]

    def start(self) -> LocalJupyter:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), env=self.env, cwd=self.root_dir, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}api/status", headers=self.auth, timeout=2,
                             trust_env=False).status_code == 200:
                    return self
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"jupyter {self.app} did not answer in {self.startup_timeout} s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the server and everything in its process group (kernels, proxied servers)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.proc is not None:
            # Children that outlived the leader (same group) get the same end.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._tmp.cleanup()

    def __enter__(self) -> LocalJupyter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
