"""The JupyterLab launcher tile "NN Workbench", through jupyter-server-proxy.

``pyproject.toml`` registers :func:`setup_workbench` in the ``jupyter_serverproxy_servers``
entry-point group. jupyter-server-proxy (enabled on install, with its prebuilt lab extension)
reads it when the Jupyter server starts, adds the launcher tile and proxies ``/workbench/`` —
the app, the REST API and both websockets — with Jupyter's own authentication in front.

The backend listens on a Unix socket in a private temporary folder (mode 0700), never on a TCP
port, so nothing but Jupyter's authenticated proxy can reach it. On the first request
(clicking the tile) the backend is chosen:

- a ``workbench serve`` already owns the store -> a relay to it (DuckDB's one-writer rule:
  Jupyter must not open the file a second time);
- otherwise -> ``workbench serve --uds {unix_socket}``, owned by this Jupyter server.

Behind Jupyter's login, the proxy adds ``Authorization: Bearer <key>`` to every request, so the
REST API's key check passes for the signed-in Jupyter user. The key is ``WORKBENCH_TOKEN`` when
set, else the Jupyter key kept in ``$WORKBENCH_HOME/jupyter.key`` (mode 0600, made on first
use): the ``workbench serve`` started here registers it as its bootstrap admin key, so it stays
valid when a standalone ``workbench serve`` later owns the same store. (Attaching to a server
whose store never saw that key needs ``WORKBENCH_TOKEN`` for the API; the app still opens.)
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from ..auth import generate_key
from ..config import Settings, get_settings
from .discovery import running_server

NAME = "workbench"  # the URL prefix: /workbench/
TITLE = "NN Workbench"
ICON = Path(__file__).with_name("workbench.svg")
# App and API import torch, panel and plotly: the first start takes several seconds, and was
# measured at ~40 s on a busy 2-core machine; past this, the user sees an error page.
START_TIMEOUT_S = 120


KEY_FILE = "jupyter.key"


def jupyter_key(settings: Settings | None = None) -> str:
    """``WORKBENCH_TOKEN``, or the key this store keeps for Jupyter (created on first use)."""
    settings = settings or get_settings()
    if settings.token:
        return settings.token
    path = settings.home / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        if key := path.read_text().strip():
            return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    # O_EXCL + 0600: never readable by others; a concurrent creator wins and we read theirs.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def backend_command(unix_socket: str) -> list[str]:
    """The process jupyter-server-proxy spawns (jupyter-server-proxy calls this at spawn time)."""
    attached = running_server()
    if attached is not None:
        return [sys.executable, "-m", "workbench.jupyter.relay",
                "--uds", unix_socket, "--to", attached.url]
    return [sys.executable, "-m", "workbench.cli", "serve", "--uds", unix_socket]


def backend_environment() -> dict[str, str]:
    """The bootstrap key for a ``workbench serve`` started here (unused by the relay)."""
    return {"WORKBENCH_TOKEN": jupyter_key()}


def request_headers() -> dict[str, str]:
    """Added to every proxied request, after Jupyter has authenticated it."""
    return {"Authorization": f"Bearer {jupyter_key()}"}


def setup_workbench() -> dict[str, Any]:
    """The ``jupyter_serverproxy_servers`` entry point: how to start and show the workbench."""
    return {
        "command": backend_command,
        "environment": backend_environment,
        "request_headers_override": request_headers,
        "unix_socket": True,
        "timeout": START_TIMEOUT_S,
        "absolute_url": False,  # the app sees "/", as under `workbench serve`
        "new_browser_tab": False,  # open in a JupyterLab tab, beside the notebooks
        "launcher_entry": {
            "enabled": True,
            "title": TITLE,
            "icon_path": str(ICON),
        },
    }
