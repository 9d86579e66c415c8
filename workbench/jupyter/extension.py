"""The ``workbench.jupyter`` Jupyter Server extension: where ``/workbench/`` leads, for humans
and tests.

``GET {base_url}api/workbench/status`` (Jupyter's login required) answers which store the
workbench uses, which process owns it now (``workbench serve`` or an on-demand owner that the
tile, a notebook or the CLI started; None when none runs) and the path of the app inside Jupyter. The proxying itself is jupyter-server-proxy's
(see :mod:`workbench.jupyter.proxy`); this extension only reports.
"""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from .. import __version__
from ..config import get_settings
from ..frontdoor import live_owner
from .proxy import NAME


class StatusHandler(APIHandler):
    """Which store, which server, which URL."""

    @web.authenticated
    async def get(self) -> None:
        from tornado.ioloop import IOLoop

        settings = get_settings()
        # A short HTTP probe: keep it off the event loop.
        owner = await IOLoop.current().run_in_executor(None, live_owner, settings)
        self.finish(json.dumps({
            "version": __version__,
            "store": str(settings.db_path),
            # The live process that owns the store, if any (the tile relays to it).
            "server": owner.url if owner else None,
            "server_pid": owner.pid if owner else None,
            "app_url": url_path_join(self.base_url, NAME) + "/",
        }))


def load_jupyter_server_extension(serverapp: Any) -> None:
    """Called by Jupyter Server at start (named ``_load_jupyter_server_extension`` in the package)."""
    base_url = serverapp.web_app.settings["base_url"]
    route = url_path_join(base_url, "api", "workbench", "status")
    serverapp.web_app.add_handlers(".*$", [(route, StatusHandler)])
    serverapp.log.info("nn-workbench: JupyterLab tile 'NN Workbench' at %s%s/", base_url, NAME)
