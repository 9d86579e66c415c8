"""The owner file: how the process that owns a store tells every other face where it is.

DuckDB allows one writing process per file, so one process owns ``$WORKBENCH_HOME`` at a time
(``workbench serve``, or an owner the front door started on demand). While it runs it keeps
``$WORKBENCH_HOME/owner.json`` (mode 0600, in a 0700 home):

    {"url": "http://127.0.0.1:8765" | "unix:/path/owner.sock", "pid": 1234,
     "token": "wb_...", "started_at": 1700000000.0, "on_demand": false, "version": "0.1.0"}

``token`` is the owner's *local credential*: an admin key made at start, revoked and removed
with the file on a clean exit. A file left by a process that died (kill -9, power loss) is
*stale*: its pid is gone or nothing answers at its URL; :func:`live_owner` ignores it and the
next owner replaces it (naming the dead owner in the runs it had to fail).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import Settings, get_settings

OWNER_FILE = "owner.json"
UNIX_PREFIX = "unix:"


@dataclass(frozen=True)
class OwnerInfo:
    url: str
    pid: int
    token: str | None
    started_at: float
    on_demand: bool = False
    version: str = ""

    def describe(self) -> str:
        """How a run failed by this owner's death names it."""
        kind = "an on-demand owner" if self.on_demand else "workbench serve"
        return f"the store's owner (pid {self.pid}, {kind} at {self.url}) died"


def owner_file(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / OWNER_FILE


def private_home(settings: Settings | None = None) -> Path:
    """The home folder, created 0700 (it holds the store, keys and the owner's credential)."""
    home = (settings or get_settings()).home
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(home, 0o700)
    return home


def read_owner(settings: Settings | None = None) -> OwnerInfo | None:
    """The recorded owner, live or not (None: no file, or not an owner file)."""
    try:
        raw: Any = json.loads(owner_file(settings).read_text())
        return OwnerInfo(url=str(raw["url"]), pid=int(raw["pid"]), token=raw.get("token"),
                         started_at=float(raw.get("started_at") or 0.0),
                         on_demand=bool(raw.get("on_demand")), version=str(raw.get("version", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_owner(info: OwnerInfo, settings: Settings | None = None) -> Path:
    """Publish ``info`` atomically (readers never see half a file), readable by this user only."""
    path = owner_file(settings)
    private_home(settings)
    tmp = path.with_name(f".{OWNER_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(info), f)
    tmp.replace(path)
    return path


def remove_owner(pid: int, settings: Settings | None = None) -> None:
    """Remove the file if it still names ``pid`` (a later owner may have replaced it)."""
    path = owner_file(settings)
    with contextlib.suppress(OSError):
        current = read_owner(settings)
        if current is not None and current.pid == pid:
            path.unlink()


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie (dead, not yet reaped by its parent) still "exists" for kill(0).
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def http_transport(url: str) -> tuple[Any, str]:
    """``(httpx transport, base URL)`` for ``http(s)://host:port`` or ``unix:/socket``."""
    import httpx

    if url.startswith(UNIX_PREFIX):
        return httpx.HTTPTransport(uds=url[len(UNIX_PREFIX):]), "http://workbench"
    return httpx.HTTPTransport(), url.rstrip("/")


def answers(url: str, *, timeout: float = 2.0) -> bool:
    """True if a workbench answers ``/api/health`` at ``url`` right now."""
    import httpx

    transport, base = http_transport(url)
    try:
        # trust_env=False: a proxy from the environment must not answer for a loopback server.
        with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client:
            return client.get(f"{base}/api/health").status_code == 200
    except httpx.HTTPError:
        return False


def live_owner(settings: Settings | None = None) -> OwnerInfo | None:
    """The owner of this home if it is alive and answering, else None (stale or absent)."""
    settings = settings or get_settings()
    if settings.server_url:  # an explicit server (another machine, a port forward) wins
        url = settings.server_url.rstrip("/")
        return OwnerInfo(url=url, pid=0, token=settings.token, started_at=0.0) \
            if answers(url) else None
    info = read_owner(settings)
    if info is None or not pid_alive(info.pid) or not answers(info.url):
        return None
    return info
