"""The Panel app: architecture builder, launch panel, live run view, runs and playground.

``workbench.ui.app()`` shows the whole app inline in a notebook; ``workbench.ui.server.mount``
serves it at ``/`` of the REST API's FastAPI app. Imports are lazy: importing this package does
not import Panel.
"""

from __future__ import annotations

from typing import Any


def app(service: Any = None) -> Any:
    """The full app, for a notebook cell."""
    from .app import app as _app

    return _app(service)


__all__ = ["app"]
