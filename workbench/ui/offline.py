"""Keep Panel output in a notebook free of CDN stylesheets, also for components made later.

``pn.extension(inline=True)`` inlines Bokeh's and Panel's JS and, at a cell's first render, the
stylesheets of its components. Components made afterwards in a callback (the builder's new layer
rows) get their stylesheet URLs rewritten against the document's ``dist_url`` -- the CDN unless
the document names another. ``serve_stylesheets_locally`` names the Jupyter server's own copy of
Panel's files (Panel's server extension, installed and enabled with Panel, serves them at
``{base_url}panel-preview/static/extensions/panel/``), as Panel does for its own previews.
"""

from __future__ import annotations

PANEL_PREVIEW_DIST = "panel-preview/static/extensions/panel/"


def dist_url(base_url: str = "/") -> str:
    return base_url.rstrip("/") + "/" + PANEL_PREVIEW_DIST


def serve_stylesheets_locally(base_url: str = "/") -> None:
    """Every document Panel has rendered into a notebook cell (those with a comm) takes later
    components' stylesheets from the Jupyter server at ``base_url``."""
    import panel as pn

    for _viewable, _root, doc, comm in list(pn.state._views.values()):
        if comm is not None and doc is not None:
            doc._template_variables["dist_url"] = dist_url(base_url)
