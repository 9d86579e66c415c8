"""The workbench app: the builder, launch panel, live view, runs, sweeps, playground and devices
as tabs.

This module only composes; each view lives in its own module and talks to the shared
``AppState`` and, through it, to the service. Served pages load plotly.js and Tabulator (5 MB
of JavaScript, most of a first render's cost) only when a tab that needs them first opens:
see ``lazy.LibraryLoader``.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any

import panel as pn
import param
from panel.viewable import Viewer

from ..devices import device_label
from .builder import Builder
from .devices_view import DevicesView
from .launch import LaunchPanel
from .lazy import LibraryLoader
from .live import LiveRun
from .netbuilder import NetBuilder
from .playground import Playground
from .runs import RunsView
from .state import AppState
from .sweeps_view import SweepsView
from .theme import HEADER_CSS, html

TITLE = "nn-workbench"
TABS = ("Build", "Train", "Runs", "Sweeps", "Playground", "Devices")
# The browser libraries each tab's views need (the Build tab needs none).
NEEDS = {"Train": ("plotly",), "Runs": ("plotly", "tabulator"), "Sweeps": ("plotly",),
         "Playground": ("plotly",), "Devices": ("plotly",)}
PEAK_POLL_MS, PEAK_POLLS = 250, 120


def header_device(device: str) -> str:
    """The header's device: a GPU's name, or the CPU and its core count -- not torch's thread
    count, which differs between the sessions built before and after the server applies its
    thread setting (the header flapped between "1 threads" and "2 threads")."""
    if not device.startswith("cpu"):
        return device_label(device)
    cores = os.cpu_count() or 1
    return f"CPU ({platform.machine() or 'cpu'}, {cores} core{'s' if cores != 1 else ''})"


class WorkbenchApp(Viewer):
    """One session's app. Views other than the builder are built when their tab is first
    opened, so the first render of the page only pays for the Build tab."""

    state = param.ClassSelector(class_=AppState)

    def __init__(self, service: Any, *, state: AppState | None = None, lazy_js: bool = False):
        """``lazy_js``: the page was served without plotly.js / Tabulator (``server.mount``);
        load them in the browser before a tab that needs them is built."""
        super().__init__(state=state or AppState(service=service, defer_peak=lazy_js))
        self.builder = Builder(self.state)
        self.netbuilder = NetBuilder(self.state)  # cnn20b: native networks (CNNs)
        self.views: dict[str, Any] = {}
        self._built: set[str] = set()
        self._loader = LibraryLoader(on_ready=self._build_ready) if lazy_js else None
        # Not Tabs(dynamic=True): that detaches hidden tabs from the document, and Panel then
        # gives their updated panes CDN stylesheet URLs (the app must work offline). The
        # lazily filled slots keep the first render just as cheap.
        self._slots = {tab: pn.Column(html("<div class='wb-empty'>loading…</div>"),
                                      sizing_mode="stretch_width", margin=0)
                       for tab in TABS[1:]}
        self.tabs = pn.Tabs(
            ("Build", pn.Column(self._build_modes(), margin=(10, 16),
                                sizing_mode="stretch_width")),
            *self._slots.items(), sizing_mode="stretch_width",
            css_classes=["wb-tabs"],
        )
        self.tabs.param.watch(lambda e: self.open_tab(TABS[e.new]), "active")
        # A launched run is watched on the Train tab; one opened from the Runs tab too.
        self.state.param.watch(lambda e: self.show_tab("Train") if e.new else None, "run_id")
        self._header = pn.pane.HTML(
            f"<div class='wb-header'><span class='logo'>◆ {TITLE}</span>"
            "<span class='sub'>design · train · watch · serve small neural networks</span>"
            f"<span class='dev'>{header_device(self.state.device)}</span></div>",
            stylesheets=[HEADER_CSS], sizing_mode="stretch_width", margin=0,
        )

    def _build_modes(self) -> pn.Tabs:
        """The MLP builder (the MNIST MLP API's form) and the network builder (native spec:
        CNNs, any dataset); the open one is what a launch trains (cnn20b, issue 20)."""
        modes = pn.Tabs(("MLP", self.builder), ("Network (CNN)", self.netbuilder),
                        sizing_mode="stretch_width", css_classes=["wb-build-modes"])
        modes.param.watch(lambda e: setattr(self.state, "build_mode",
                                            ("mlp", "network")[e.new]), "active")
        return modes

    def _keep_builder_in_url(self) -> None:
        """The architecture lives in the page's URL: a reload keeps the work, and the address
        is a link that opens the same architecture for someone else. Read once from the
        request (server-side, no round trip), then written one way: an echo of the browser's
        location can never undo an edit made meanwhile (two-way sync did, on fast clicks)."""
        args = pn.state.session_args
        if args.get("layers"):
            try:
                self.builder.load_json({
                    "input_size": int(args.get("input", [b"784"])[0]),
                    "layers": json.loads(args["layers"][0])})
            except (ValueError, TypeError, KeyError):
                pass  # a hand-edited link: keep the default architecture
        location = pn.state.location
        if location is None:
            return

        def write(*_: Any) -> None:
            location.update_query(input=str(self.builder.input_size),
                                  layers=json.dumps(self.builder.layers,
                                                    separators=(",", ":")))

        self.builder.param.watch(write, ["input_size", "layers"])

    def open_tab(self, tab: str) -> None:
        """Build ``tab``'s views if not done yet (once its browser libraries are loaded)."""
        if tab not in self._slots or tab in self._built:
            return
        if self._loader is not None and not self._loader.ready(NEEDS.get(tab, ())):
            self._loader.request(tab, NEEDS.get(tab, ()))
            return
        self._build(tab)

    def _build_ready(self) -> None:
        for tab in self._loader.pending_ready() if self._loader else ():
            self._build(tab)

    def _build(self, tab: str) -> None:
        if tab in self._built:
            return
        self._built.add(tab)
        slot = self._slots[tab]
        if tab == "Train":
            self.views["launch"], self.views["live"] = LaunchPanel(self.state), LiveRun(self.state)
            body: Any = pn.Row(
                pn.Column(self.views["launch"], width=520, margin=(10, 16)),
                pn.Column(self.views["live"], sizing_mode="stretch_width", margin=(10, 16)),
                sizing_mode="stretch_width")
        else:
            view = {"Runs": RunsView, "Sweeps": SweepsView, "Playground": Playground,
                    "Devices": DevicesView}[tab](self.state)
            self.views[tab.lower()] = view
            body = pn.Column(view, margin=(10, 16), sizing_mode="stretch_width")
        slot.objects = [body]

    def show_tab(self, tab: str) -> None:
        self.open_tab(tab)
        self.tabs.active = TABS.index(tab)

    def close(self) -> None:
        if "live" in self.views:
            self.views["live"].close()

    def __panel__(self) -> pn.viewable.Viewable:
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.on_session_destroyed(lambda _ctx: self.close())
            self._keep_builder_in_url()
            if not self.state.refresh_peak():  # still being measured at server start
                pn.state.add_periodic_callback(self.state.refresh_peak, period=PEAK_POLL_MS,
                                               count=PEAK_POLLS)
        parts = [self._header, self.tabs]
        if self._loader is not None:
            parts.append(self._loader)
            loader = self._loader
            libs = sorted({lib for needs in NEEDS.values() for lib in needs})
            pn.state.onload(lambda: loader.prefetch(libs))  # after the first render
        return pn.Column(*parts, sizing_mode="stretch_width", margin=0)


def create_app(service: Any, *, state: AppState | None = None,
               lazy_js: bool = False) -> WorkbenchApp:
    return WorkbenchApp(service, state=state, lazy_js=lazy_js)


def app(service: Any) -> WorkbenchApp:
    """The full app over ``service`` (an in-process ``Workbench``, e.g. on a temporary store),
    for a notebook cell. Notebooks on a shared home use ``workbench.notebook.app()`` instead."""
    pn.extension("plotly", "tabulator")
    return create_app(service)
