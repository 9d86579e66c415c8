"""Find a ``workbench serve`` that already owns the store, so Jupyter attaches instead of opening it.

DuckDB allows one writing process per file. When a ``workbench serve`` is running on this
``WORKBENCH_HOME``, the JupyterLab launcher tile must talk to that server rather than start a
second one on the same file. ``workbench serve`` announces itself with :func:`server_info`, a
small JSON file next to the DuckDB file (``{"url": ..., "pid": ...}``, no secrets); a Unix-socket
server is announced as ``unix:/path/to/socket``. Candidates, in order: ``WORKBENCH_SERVER_URL``
and that file. A candidate counts only if it answers HTTP right now (a stale file from a killed
server is ignored).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings, get_settings

log = logging.getLogger(__name__)

SERVER_INFO_NAME = "server.json"
UNIX_PREFIX = "unix:"


@dataclass(frozen=True)
class RunningServer:
    """A live workbench server: ``http(s)://host:port`` or ``unix:/socket``, and its API key if
    this process knows one (``WORKBENCH_TOKEN``)."""

    url: str
    token: str | None


def server_info_path(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / SERVER_INFO_NAME


@contextlib.contextmanager
def server_info(url: str, settings: Settings | None = None) -> Iterator[Path]:
    """Announce a server for this store while the block runs (``workbench serve`` uses this)."""
    path = server_info_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    tmp.replace(path)  # atomic: readers never see half a file
    try:
        yield path
    finally:
        with contextlib.suppress(OSError, ValueError):
            # Only remove our own announcement (a later server may have replaced it).
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def _candidates(settings: Settings) -> list[RunningServer]:
    found: list[RunningServer] = []
    if settings.server_url:
        found.append(RunningServer(settings.server_url.rstrip("/"), settings.token))
    try:
        url = json.loads(server_info_path(settings).read_text()).get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://", UNIX_PREFIX)):
            found.append(RunningServer(url.rstrip("/"), settings.token))
    except (OSError, ValueError, AttributeError):
        pass  # no info file, or a half-written / foreign one: nothing to attach to
    return found


def is_alive(url: str, *, timeout: float = 1.0) -> bool:
    """True if something answers HTTP at ``url`` (any status: it is a server, not a dead port)."""
    import httpx

    if url.startswith(UNIX_PREFIX):
        transport = httpx.HTTPTransport(uds=url[len(UNIX_PREFIX):])
        base = "http://workbench"
    else:
        transport, base = httpx.HTTPTransport(), url
    try:
        # trust_env=False: a proxy from the environment must not answer for a loopback server.
        with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client:
            client.get(f"{base}/api/health")
        return True
    except httpx.HTTPError:
        return False


def running_server(settings: Settings | None = None) -> RunningServer | None:
    """The first live server that owns this store, or None when Jupyter should start its own."""
    settings = settings or get_settings()
    for candidate in _candidates(settings):
        if is_alive(candidate.url):
            return candidate
        log.info("workbench: %s does not answer; not attaching to it", candidate.url)
    return None
