"""Notebook API: the workbench from a Jupyter cell, with ipywidgets.

    from workbench import notebook as wb
    b = wb.builder()                      # the architecture builder as a widget
    run = wb.train(b.architecture, {"epochs": 5}, limit=5000)   # live progress + FigureWidget
    run.wait(); wb.runs()                 # a DataFrame of every run
    wb.infer(run.param_id, x)             # x: (n, 784) normalized inputs
    wb.app()                              # the whole Panel app inline

Training runs through an in-process ``Workbench`` on the default store, so events arrive on its
bus and the figure gains points as each epoch ends. DuckDB allows one writing process: when a
``workbench serve`` owns the store, ``service()`` says so (use ``client()`` to talk to it).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import events as ev
from .spec import Architecture, validate_architecture

_service: Any = None
_lock = threading.Lock()


def service() -> Any:
    """The notebook's ``Workbench`` on the default store (opened once per kernel)."""
    global _service
    with _lock:
        if _service is None:
            from .service import Workbench
            from .store import Store, StoreLockedError

            try:
                _service = Workbench(Store())
            except StoreLockedError as exc:
                raise RuntimeError(
                    "the workbench store is owned by another process (probably `workbench "
                    "serve`). Open the app it serves in a browser (the `/?token=<key>` link "
                    "it printed logs you in), or use "
                    "`wb.client()` to call its REST API from this notebook. " + exc.message
                ) from None
            from .executors.registry import install

            install(_service)  # target="local-kernel" | "distributed" | a node id
        return _service


def client(base_url: str | None = None, api_key: str | None = None) -> Any:
    """A REST client for a running server (``WORKBENCH_SERVER_URL`` / ``WORKBENCH_TOKEN``)."""
    from .client import Client
    from .config import get_settings

    settings = get_settings()
    url = base_url or settings.server_url or "http://127.0.0.1:8000"
    return Client(url, api_key or settings.token)


def use(workbench: Any) -> None:
    """Make the notebook API use ``workbench`` (e.g. one on a temporary store)."""
    global _service
    with _lock:
        _service = workbench


def _architecture(arch: Any) -> dict[str, Any]:
    """Architecture | builder | JSON dict | ``[784, 128, 10]`` -> validated JSON."""
    if hasattr(arch, "architecture") and not isinstance(arch, dict):
        arch = arch.architecture
        if arch is None:
            raise ValueError("the builder's architecture is not valid yet")
    if isinstance(arch, (list, tuple)):
        arch = Architecture.from_layer_sizes(list(arch))
    return validate_architecture(arch).to_json()


def builder(architecture: Any = None, *, dataset: str = "mnist") -> Any:
    """The Panel architecture builder, shown in the cell; read ``.architecture`` (an
    ``Architecture``, or None while invalid) or ``.to_json()`` afterwards."""
    import panel as pn

    from .ui.builder import Builder
    from .ui.state import AppState

    pn.extension()
    b = Builder(AppState(service=service(), dataset=dataset))
    if architecture is not None:
        b.load_json(_architecture(architecture))
    return b


class NotebookRun:
    """A run started from a notebook: a progress bar and a live plotly ``FigureWidget``
    (train/val loss and accuracy per epoch) that gain points as epochs end."""

    def __init__(self, workbench: Any, run_id: str, epochs: int):
        import ipywidgets as widgets
        import plotly.graph_objects as go

        self.service = workbench
        self.run_id = run_id
        self.history: list[dict[str, Any]] = []
        self.error: str | None = None
        self._done = threading.Event()
        # Subscribe before anything slow (a FigureWidget ships plotly.js to the frontend):
        # events arriving meanwhile are held, then replayed after the stored history.
        self._lock = threading.Lock()
        self._held: list[dict[str, Any]] | None = []
        self._unsubscribe = workbench.bus.subscribe(self._receive, run_id=run_id)
        self.figure = go.FigureWidget(layout=dict(
            template="plotly_white", height=320, margin=dict(l=50, r=50, t=40, b=40),
            title=dict(text=f"run {run_id}", font=dict(size=14)), xaxis=dict(title="epoch"),
            yaxis=dict(title="loss"), legend=dict(orientation="h", y=-0.2),
            yaxis2=dict(title="accuracy", overlaying="y", side="right", range=[0, 1])))
        for name, axis, dash in (("train_loss", "y", None), ("val_loss", "y", None),
                                 ("train_accuracy", "y2", "dot"), ("val_accuracy", "y2", "dot")):
            self.figure.add_scatter(x=[], y=[], name=name, yaxis=axis, mode="lines+markers",
                                    line=dict(dash=dash))
        self.progress = widgets.IntProgress(value=0, min=0, max=epochs, description="epoch 0/"
                                            f"{epochs}", bar_style="info")
        self.status = widgets.HTML(value="<code>queued</code>")
        self.widget = widgets.VBox([widgets.HBox([self.progress, self.status]), self.figure])
        with self._lock:
            stored: dict[int, dict[str, Any]] = {}
            for m in workbench.store.get_metrics(run_id):
                if m.name != "step_loss":
                    stored.setdefault(m.epoch, {"epoch": m.epoch})[m.name] = m.value
            for epoch in sorted(stored):
                self._on_event({"type": ev.EPOCH, "data": stored[epoch]})
            held, self._held = self._held or [], None
            for event in held:
                self._on_event(event)
        record = workbench.get_run(run_id)
        if record.is_terminal and not self._done.is_set():
            self.error = record.error
            self._finish(record.state)

    def _receive(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self._held is not None:
                self._held.append(event)
                return
        self._on_event(event)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data") or {}
        if kind == ev.RUN_STARTED:
            self.status.value = f"<code>running on {data.get('device', '?')}</code>"
        elif kind == ev.EPOCH:
            if any(h["epoch"] == data["epoch"] for h in self.history):
                return  # already loaded from the store
            self.history.append(data)
            epochs = [h["epoch"] for h in self.history]
            with self.figure.batch_update():
                for trace in self.figure.data:
                    trace.x = epochs
                    trace.y = [h.get(trace.name) for h in self.history]
            self.progress.value = int(data["epoch"])
            self.progress.description = f"epoch {data['epoch']}/{self.progress.max}"
            self.status.value = (
                f"<code>val acc {data.get('val_accuracy') or 0:.3f} · "
                f"{data.get('samples_per_s', 0):,.0f} samples/s · "
                f"{data.get('total_tflops', 0):.3g} TFLOPS</code>")
        elif kind in ev.TERMINAL:
            if kind == ev.RUN_FAILED:
                self.error = str(data.get("error"))
            self._finish({ev.RUN_COMPLETED: "succeeded", ev.RUN_FAILED: "failed",
                          ev.RUN_CANCELLED: "cancelled"}[kind])

    def _finish(self, state: str) -> None:
        if self._done.is_set():
            return
        self.progress.bar_style = {"succeeded": "success", "failed": "danger"}.get(state,
                                                                                   "warning")
        self.status.value = f"<code>{state}</code>" + (
            f" <span style='color:#b42318'>{self.error}</span>" if self.error else "")
        self._unsubscribe()
        self._done.set()

    @property
    def record(self) -> Any:
        return self.service.get_run(self.run_id)

    @property
    def param_id(self) -> str | None:
        return self.record.param_id

    def points(self) -> int:
        """Epoch points currently in the figure."""
        return len(self.figure.data[0].x or ())

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the run ends; returns its record."""
        return self.service.wait_run(self.run_id, timeout)

    def cancel(self) -> Any:
        return self.service.cancel_run(self.run_id)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return f"NotebookRun({self.run_id!r}, epochs={len(self.history)})"


def train(
    architecture: Any, hyperparams: dict[str, Any] | None = None, *, dataset: str = "mnist",
    target: str = "local", device: str = "auto", limit: int | None = None,
    name: str | None = None, wait: bool = False, show: bool = True,
) -> NotebookRun:
    """Start a run and show its live progress in the cell; returns a ``NotebookRun``."""
    wbench = service()
    model = wbench.create_model(_architecture(architecture), hyperparams, name=name)
    run = wbench.start_run(model.model_id, dataset=dataset, target=target, device=device,
                           limit=limit)
    handle = NotebookRun(wbench, run.run_id, run.epochs_total)
    if show:
        from IPython.display import display

        display(handle.widget)
    if wait:
        handle.wait()
    return handle


def runs(**filters: Any) -> Any:
    """Every run as a pandas DataFrame (filters: state, model_id, dataset, target)."""
    from .ui.runs import all_runs, runs_frame

    wbench = service()
    names = {m.model_id: m.name for m in wbench.list_models(limit=10_000)}
    return runs_frame(all_runs(wbench, **filters), names)


def infer(param_id: str, inputs: Any, **flags: bool) -> dict[str, Any]:
    """``Workbench.infer``: inputs (n, 784) normalized as in training."""
    return service().infer(param_id, np.asarray(inputs, dtype=np.float32), **flags)


def app() -> Any:
    """The full Panel app inline."""
    from .ui.app import app as _app

    return _app(service())
