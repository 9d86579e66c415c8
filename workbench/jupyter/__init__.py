"""Jupyter integration: the "NN Workbench" launcher tile and the ``/workbench/`` proxy.

Installed with the package and enabled by ``etc/jupyter/jupyter_server_config.d/nn_workbench.json``
(no build or enable step):

- :mod:`.proxy` -- the ``jupyter_serverproxy_servers`` entry point: jupyter-server-proxy shows
  the tile and proxies ``/workbench/`` (app, REST API, websockets) behind Jupyter's login;
- :mod:`.relay` -- relays the tile to the store's owner (found or started by the front door);
- :mod:`.extension` -- this Jupyter Server extension: ``GET /api/workbench/status``.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "workbench.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    # Imported here: ``workbench serve`` imports this package and needs no jupyter_server.
    from .extension import load_jupyter_server_extension

    load_jupyter_server_extension(serverapp)


__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]
