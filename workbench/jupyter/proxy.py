"""The JupyterLab launcher tile "NN Workbench", through jupyter-server-proxy.

``pyproject.toml`` registers :func:`setup_workbench` in the ``jupyter_serverproxy_servers``
entry-point group. jupyter-server-proxy (enabled on install, with its prebuilt lab extension)
reads it when the Jupyter server starts, adds the launcher tile and proxies ``/workbench/`` —
the app, the REST API and both websockets — with Jupyter's own authentication in front.

The tile never opens the store itself: it goes through the front door like every other face.
jupyter-server-proxy spawns :mod:`workbench.jupyter.relay` on a Unix socket in a private
folder; the relay finds this home's owner (``workbench serve``, or an owner it starts on
demand) and copies bytes to it, finding the owner again if it was restarted. So the tile, the
notebooks in the same Lab and the CLI all share one owner, and closing the tile frees nothing
that a notebook needs. Behind Jupyter's login the proxy adds ``Authorization: Bearer <the
owner's local credential>`` to every request (read from the owner file at each request, so an
owner restart is picked up).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..frontdoor import find_owner

NAME = "workbench"  # the URL prefix: /workbench/
TITLE = "NN Workbench"
ICON = Path(__file__).with_name("workbench.svg")
# The owner imports torch, panel and plotly: its first start takes several seconds, and was
# measured at ~40 s on a busy 2-core machine; past this, the user sees an error page.
START_TIMEOUT_S = 180


def backend_command(unix_socket: str) -> list[str]:
    """The process jupyter-server-proxy spawns (called at spawn time): a relay to the owner."""
    return [sys.executable, "-m", "workbench.jupyter.relay", "--uds", unix_socket, "--owner"]


def request_headers() -> dict[str, str]:
    """Added to every proxied request, after Jupyter has authenticated it."""
    owner = find_owner(quiet=True)
    return {"Authorization": f"Bearer {owner.token}"} if owner.token else {}


def setup_workbench() -> dict[str, Any]:
    """The ``jupyter_serverproxy_servers`` entry point: how to start and show the workbench."""
    return {
        "command": backend_command,
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
