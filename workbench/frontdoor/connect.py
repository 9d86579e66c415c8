"""The front door: every face (CLI, notebook, Jupyter tile, benchmarks) reaches the store here.

    from workbench.frontdoor import connect
    client = connect()          # a workbench.client.Client of this home's owner

If a process owns ``$WORKBENCH_HOME`` (``workbench serve``, or an owner started earlier), the
face becomes its client over the public REST API. If none does, the front door starts one *on
demand* -- ``workbench serve --on-demand``, detached, on a private Unix socket, stopping after
``WORKBENCH_OWNER_IDLE_S`` (default 600) seconds with no request and no run -- and connects to
it. Why an owner on demand rather than the face opening the store itself: then there is exactly
one way in, every face sees every other face's runs live, and a notebook, the CLI and the app
can be used at once (DuckDB allows one writing process; a face that held the file would lock
out the others for as long as it lives). Starting two owners at once is prevented by a lock
file; a stale owner file (a killed owner) is replaced by the new owner.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import Settings, get_settings
from .owner_file import OwnerInfo, live_owner, pid_alive, private_home, read_owner

START_TIMEOUT_S = 180.0  # the owner imports torch, FastAPI and Panel; slow on a busy 2-core box
OWNER_LOG = "owner.log"


class OwnerUnavailable(RuntimeError):
    """No owner could be found or started (the message says why and where the log is)."""


def owner_socket(settings: Settings | None = None) -> Path:
    """Where an on-demand owner listens: in the home, or (when that path is too long for a Unix
    socket, ~104 bytes) in a private per-user temporary folder keyed by the home."""
    settings = settings or get_settings()
    path = settings.home / "owner.sock"
    if len(str(path)) <= 100:
        return path
    folder = Path(tempfile.gettempdir()) / f"workbench-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    digest = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:16]
    return folder / f"{digest}.sock"


@contextlib.contextmanager
def _start_lock(settings: Settings) -> Iterator[None]:
    """One starter at a time per home (other faces wait, then find the owner it started)."""
    home = private_home(settings)
    with open(home / "owner.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_owner(settings: Settings | None = None, *, quiet: bool = False,
                timeout: float = START_TIMEOUT_S) -> OwnerInfo:
    """Start an on-demand owner of this home (unless one is already live) and wait for it."""
    settings = settings or get_settings()
    with _start_lock(settings):
        found = live_owner(settings)
        if found is not None:
            return found
        log_path = settings.home / OWNER_LOG
        cmd = [sys.executable, "-m", "workbench.cli", "serve", "--on-demand",
               "--uds", str(owner_socket(settings))]
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this face; Ctrl-C here does not reach it
                env={**os.environ, "WORKBENCH_HOME": str(settings.home)},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = read_owner(settings)
            if info is not None and info.pid == process.pid:
                found = live_owner(settings)
                if found is not None:
                    break
            if process.poll() is not None:
                raise OwnerUnavailable(
                    f"the workbench owner for {settings.home} exited at start (code "
                    f"{process.returncode}); its log: {log_path}\n{_tail(log_path)}")
            time.sleep(0.1)
        else:
            process.terminate()
            raise OwnerUnavailable(f"the workbench owner for {settings.home} did not answer "
                                   f"within {timeout:.0f} s; its log: {log_path}")
    if not quiet:
        print(f"workbench: started a background owner of {settings.home} (pid {found.pid}; "
              f"it stops after {settings.owner_idle_s:.0f} s idle, or now with `workbench stop`)",
              file=sys.stderr)
    return found


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def find_owner(*, start: bool = True, quiet: bool = False,
               settings: Settings | None = None) -> OwnerInfo:
    """The live owner of this home, started on demand when ``start`` (else OwnerUnavailable)."""
    settings = settings or get_settings()
    found = live_owner(settings)
    if found is not None:
        return found
    if not start:
        raise OwnerUnavailable(f"no workbench owns {settings.home} (start one with "
                               "`workbench serve`, or let any command start one)")
    return start_owner(settings, quiet=quiet)


def connect(*, start: bool = True, quiet: bool = False, settings: Settings | None = None,
            **client_options: Any) -> Any:
    """A :class:`workbench.client.Client` of this home's owner (see the module docstring)."""
    from ..client import Client

    owner = find_owner(start=start, quiet=quiet, settings=settings)
    return Client(owner.url, owner.token, **client_options)


def http_client(*, start: bool = True, timeout: float = 60.0) -> Any:
    """A plain ``httpx.Client`` on this home's owner at ``/api`` with its credential: what any
    HTTP tool would do (the owner may listen on a Unix socket, which this handles)."""
    import httpx

    from .owner_file import http_transport

    owner = find_owner(start=start, quiet=True)
    transport, base = http_transport(owner.url)
    headers = {"Authorization": f"Bearer {owner.token}"} if owner.token else {}
    return httpx.Client(base_url=f"{base}/api", headers=headers, transport=transport,
                        timeout=timeout, trust_env=False)


def stop_owner(settings: Settings | None = None, *, timeout: float = 30.0) -> OwnerInfo | None:
    """Stop this home's owner (SIGTERM: a clean exit, runs fail "server shut down"); returns
    the owner stopped, or None when none was running."""
    import signal

    settings = settings or get_settings()
    info = read_owner(settings)
    if info is None or not pid_alive(info.pid):
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return info
