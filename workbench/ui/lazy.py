"""Load plotly.js and Tabulator in the browser only when a tab first needs them.

A served page that carries them parses about 5 MB of JavaScript before its first render (most
of that render's time on a small machine). ``server.mount`` serves the page without them; when
a tab that needs a library opens, ``LibraryLoader.request`` sets a hidden widget's value, whose
browser-side callback adds the ``<script>``/``<link>`` tags (the installed packages' files under
``static/``, so it works offline and under Jupyter's ``/workbench/`` prefix), waits for them and
echoes the request back; the echo reaching the server marks the libraries ready and the waiting
tabs are built. Each library loads at most once per page.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import panel as pn
import param
from panel.viewable import Viewer

# In the browser: load each URL once (in order: Tabulator before luxon), then echo the request.
_LOAD_JS = """
const req = JSON.parse(source.value || "null");
if (!req) { return; }
const seen = window.__wbLibs = window.__wbLibs || {};
const load = (url) => seen[url] = seen[url] || new Promise((resolve, reject) => {
  const css = url.endsWith(".css");
  const el = document.createElement(css ? "link" : "script");
  if (css) { el.rel = "stylesheet"; el.href = url; } else { el.src = url; el.async = false; }
  el.onload = () => resolve(url);
  el.onerror = () => reject(new Error("could not load " + url));
  document.head.appendChild(el);
});
req.urls.reduce((prev, url) => prev.then(() => load(url)), Promise.resolve())
  .then(() => { done.value = source.value; })
  .catch((err) => console.warn("nn-workbench:", err.message));
"""


def library_urls(name: str) -> list[str]:
    """CSS then JS of a Panel extension's model (paths relative to the page, under static/).

    Each is the installed package's own file: Panel's resolution of them depends on a
    process-wide resource mode that any render may change, and a Tabulator widget rewrites its
    model's CSS list to a CDN URL that Panel then no longer maps back (after the first session
    the theme came from cdn.holoviz.org). So every URL is mapped here, from the package."""
    from panel.models.plotly import PlotlyPlot
    from panel.models.tabulator import THEME_PATH, DataTabulator

    model = {"plotly": PlotlyPlot, "tabulator": DataTabulator}[name]
    # Plotly's maplibre CSS is for map traces, which the app has none of; the Tabulator theme is
    # the widget's default ("simple").
    css = [] if name == "plotly" else [f"bundled/datatabulator/{THEME_PATH}tabulator_simple.min.css"]
    return [served_path(url) for url in css + list(model.__javascript__)]


STATIC = "static/extensions/panel/"


def served_path(url: str) -> str:
    """``url`` (a CDN URL of Panel's dist, a ``static/...`` path or a dist-relative path) as the
    path under ``static/`` the server serves it at; ``ValueError`` if the package lacks it."""
    from panel.io.resources import CDN_DIST, DIST_DIR

    rel = url.split("?")[0]
    for prefix in (CDN_DIST, STATIC):
        if rel.startswith(prefix):
            rel = rel[len(prefix):]
    if not (DIST_DIR / rel).is_file():
        raise ValueError(f"{url!r} is not a file of the installed Panel package")
    return STATIC + rel


class LibraryLoader(Viewer):
    """Hidden; one per session. ``ready(libs)``, ``request(tab, libs)``, ``pending_ready()``."""

    loaded = param.List(default=[], doc="libraries loaded in this session's page")

    def __init__(self, on_ready: Callable[[], None], **params: Any):
        super().__init__(**params)
        self._on_ready = on_ready
        self._pending: dict[str, tuple[str, ...]] = {}  # tab -> libraries it waits for
        self._asked: set[str] = set()
        self._request = pn.widgets.TextInput(visible=False, css_classes=["wb-lib-request"])
        self._done = pn.widgets.TextInput(visible=False, css_classes=["wb-lib-done"])
        self._request.jscallback(args={"done": self._done}, value=_LOAD_JS)
        self._done.param.watch(self._on_done, "value")
        self._serial = 0

    def ready(self, libs: Iterable[str]) -> bool:
        return all(lib in self.loaded for lib in libs)

    def request(self, tab: str, libs: Iterable[str]) -> None:
        """Build ``tab`` once ``libs`` are loaded in the browser."""
        self._pending[tab] = tuple(libs)
        self.prefetch(libs)

    def prefetch(self, libs: Iterable[str]) -> None:
        """Start loading ``libs`` in the browser now, for no tab yet: done once the first
        render is on screen, so opening a tab later does not wait for 5 MB of JavaScript."""
        libs = tuple(libs)
        missing = [lib for lib in libs if lib not in self.loaded and lib not in self._asked]
        if not missing:
            return
        self._asked.update(missing)
        self._serial += 1  # a new value each time, so the browser callback always fires
        urls = [url for lib in missing for url in library_urls(lib)]
        self._request.value = json.dumps({"id": self._serial, "libs": missing, "urls": urls})

    def pending_ready(self) -> list[str]:
        """Tabs whose libraries are all loaded now (removed from the waiting list)."""
        tabs = [tab for tab, libs in self._pending.items() if self.ready(libs)]
        for tab in tabs:
            del self._pending[tab]
        return tabs

    def _on_done(self, event: param.parameterized.Event) -> None:
        try:
            libs = json.loads(event.new)["libs"]
        except (ValueError, KeyError, TypeError):
            return  # not ours: ignore anything else a client sends
        new = {lib for lib in libs if lib in self._asked}
        self.loaded = sorted(set(self.loaded) | new)
        # Tell Panel this session's page has them now: its per-document extension list decides
        # whether a Plotly pane or Tabulator made later logs "extension was not loaded".
        doc_extensions = pn.state._extensions
        if doc_extensions is not None:
            doc_extensions.extend(sorted(new - set(doc_extensions)))
        self._on_ready()

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(self._request, self._done, visible=False, margin=0)
