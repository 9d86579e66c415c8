"""Notebook API: the workbench from a Jupyter cell, with ipywidgets.

    from workbench import notebook as wb
    b = wb.builder()                      # the architecture builder as a widget
    run = wb.train(b.architecture, {"epochs": 5}, limit=5000)   # live progress + FigureWidget
    run.wait(); wb.runs()                 # a DataFrame of every run, newest first
    wb.sweep({"space": {"lr": {"low": 1e-4, "high": 0.1, "log": True}}})  # an Optuna sweep
    wb.infer(run.param_id, x)             # x: (n, 784) normalized inputs
    wb.app()                              # the whole app inline (through JupyterLab's proxy)

    run = wb.init(name="my-cnn", config={"lr": 1e-3})   # track your own training loop
    wb.watch(model); wb.log({"loss": loss.item()}, step=i); wb.finish()   # workbench.track

A notebook is one more face: everything goes through the front door (``workbench.frontdoor``)
to the one process that owns ``WORKBENCH_HOME`` -- the ``workbench serve`` or the JupyterLab
tile's owner if one runs, else an owner started on demand -- over the public REST API. So the
tile, the CLI and any number of kernels work on one store at once, and a run started here shows
live in the app (and vice versa). ``client()`` is that REST client.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from . import events as ev
from .netspec import as_netspec_json, is_netspec_json
from .spec import Architecture, validate_architecture, validate_network
from .track import current_run, finish, init, log  # noqa: F401  (track your own training)
from .track import watch as _watch_model

_client: Any = None
_lock = threading.Lock()


def client() -> Any:
    """This kernel's :class:`workbench.client.Client` of the store's owner (made once)."""
    global _client
    with _lock:
        if _client is None:
            from .frontdoor import connect

            _client = connect()
        return _client


def use(workbench_client: Any) -> None:
    """Make the notebook API use ``workbench_client`` (a Client of another server; None: the
    front door again, on the next call)."""
    global _client
    with _lock:
        _client = workbench_client


def _architecture(arch: Any, *, native: bool = False) -> dict[str, Any]:
    """Architecture | NetSpec | builder | JSON dict (either form) | ``[784, 128, 10]`` ->
    validated JSON; ``native``: in the native spec's form (a registered dataset's network,
    with its own class count)."""
    if hasattr(arch, "architecture") and not isinstance(arch, dict):
        arch = arch.architecture
        if arch is None:
            raise ValueError("the builder's architecture is not valid yet")
    if isinstance(arch, (list, tuple)):
        arch = Architecture.from_layer_sizes(list(arch))
    if native:
        if isinstance(arch, Architecture):
            arch = arch.to_json()
        arch = as_netspec_json(arch)
    if is_netspec_json(arch):  # the native spec (CNNs); its classes are checked per run
        return validate_network(arch, num_classes=None).to_json()
    return validate_architecture(arch).to_json()


def builder(architecture: Any = None, *, dataset: str = "mnist", base_url: str = "/") -> Any:
    """The Panel architecture builder, shown in the cell; read ``.architecture`` (an
    ``Architecture``, or None while invalid) or ``.to_json()`` afterwards. ``base_url``: the
    Jupyter server's base URL (its copy of Panel's stylesheets is used offline)."""
    import panel as pn

    from .ui.builder import Builder
    from .ui.offline import serve_stylesheets_locally
    from .ui.state import AppState

    class NotebookBuilder(Builder):
        def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
            bundle = super()._repr_mimebundle_(include, exclude)
            serve_stylesheets_locally(base_url)  # rows added later: no CDN stylesheets either
            return bundle

    # Inline: Bokeh's and Panel's JS and CSS go into the notebook output, so the widget renders
    # on a machine without internet (the default loads them from cdn.bokeh.org/cdn.holoviz.org).
    pn.extension(inline=True)
    b = NotebookBuilder(AppState(service=None, dataset=dataset))
    if architecture is not None:
        b.load_json(_architecture(architecture))
    return b


class NotebookRun:
    """A run started from (or opened in) a notebook: a progress bar and a live plotly
    ``FigureWidget`` (train/val loss and accuracy per epoch) that gain points as epochs end.

    A thread follows the run's event log through the front door from event 0, so opening a run
    that is half done shows its finished epochs first, and a dropped connection loses nothing
    (the follow resumes from the last event id)."""

    def __init__(self, workbench_client: Any, run_id: str, epochs: int):
        import ipywidgets as widgets
        import plotly.graph_objects as go

        self.client = workbench_client
        self.run_id = run_id
        self.history: list[dict[str, Any]] = []
        # a tracked run (workbench.track): its logged loss/accuracy points, {name: {step: v}}
        self.logged: dict[str, dict[int, float]] = {}
        self.error: str | None = None
        self.state = "queued"
        self._done = threading.Event()
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
        self._thread = threading.Thread(target=self._follow, daemon=True,
                                        name=f"follow-{run_id}")
        self._thread.start()

    def _follow(self) -> None:
        import httpx

        after = 0
        try:
            while True:
                try:
                    for event in self.client.follow(self.run_id, after=after):
                        after = max(after, int(event.get("id") or 0))
                        self._on_event(event)
                    break
                except httpx.TransportError:  # the owner went away: find (or start) the next
                    from .frontdoor import connect

                    self.client = connect(quiet=True)
        except Exception as exc:  # the owner went away for good: say so in the cell
            self.error = f"lost the run's events: {exc}"
            self.status.value = f"<span style='color:#b42318'>{self.error}</span>"
        finally:
            if not self._done.is_set():
                self._finish(self.client.get_run(self.run_id)["state"])

    def _on_event(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data") or {}
        if kind == ev.RUN_STARTED:
            self.state = "running"
            self.status.value = f"<code>running on {data.get('device', '?')}</code>"
        elif kind == ev.EPOCH:
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
        elif kind == ev.METRICS:
            self._on_points(ev.metric_points(data))
        elif kind in ev.TERMINAL:
            if kind == ev.RUN_FAILED:
                self.error = str(data.get("error"))
            self._finish({ev.RUN_COMPLETED: "succeeded", ev.RUN_FAILED: "failed",
                          ev.RUN_CANCELLED: "cancelled"}[kind])

    def _on_points(self, points: list[tuple[str, float, int | None]]) -> None:
        """A tracked run's logged points: names with "loss" on the loss axis, with "acc" on
        the accuracy axis, by step (the rest are in ``wb.runs()`` and ``wb.sql``)."""
        self.state = "running"
        for name, value, step in points:
            if "loss" in name.lower() or "acc" in name.lower():
                series = self.logged.setdefault(name, {})
                series[len(series) if step is None else step] = value
        with self.figure.batch_update():
            self.figure.layout.xaxis.title = "step"
            traces = {t.name: t for t in self.figure.data}
            for name, series in self.logged.items():
                if name not in traces:
                    self.figure.add_scatter(x=[], y=[], name=name, mode="lines",
                                            yaxis="y" if "loss" in name.lower() else "y2")
                    traces[name] = self.figure.data[-1]
                steps = sorted(series)
                traces[name].x, traces[name].y = steps, [series[s] for s in steps]

    def _finish(self, state: str) -> None:
        if self._done.is_set():
            return
        import html

        self.state = state
        self.progress.bar_style = {"succeeded": "success", "failed": "danger"}.get(state,
                                                                                   "warning")
        self.status.value = f"<code>{state}</code>" + (
            f" <span style='color:#b42318'>{html.escape(self.error)}</span>"
            if self.error else "")
        self._done.set()

    @property
    def record(self) -> dict[str, Any]:
        """The run as ``GET /api/runs/{id}`` answers it."""
        return self.client.get_run(self.run_id)

    @property
    def param_id(self) -> str | None:
        return self.record.get("param_id")

    def points(self) -> int:
        """Epoch points currently in the figure (a tracked run: the longest logged series)."""
        return max((len(t.x or ()) for t in self.figure.data), default=0)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        """Block until the run ends (and the figure has every epoch); returns the run."""
        self._done.wait(timeout)
        return self.record

    def cancel(self) -> dict[str, Any]:
        return self.client.cancel(self.run_id)

    def pause(self) -> dict[str, Any]:
        """Checkpoint at the end of the current epoch and stop ``paused``."""
        return self.client.pause(self.run_id)

    def resume(self, target: str | None = None) -> dict[str, Any]:
        """Continue a paused run from its last checkpoint (on ``target`` to move it)."""
        return self.client.resume(self.run_id, target=target)

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
    from .client import MNIST_API_DATASETS

    c = client()
    arch = _architecture(architecture, native=dataset not in MNIST_API_DATASETS)
    model = c.create_model(arch, hyperparams, name=name)
    queued = c.train(model["model_id"], dataset=dataset, target=target, device=device,
                     limit=limit)
    handle = NotebookRun(c, queued["run_id"], c.get_run(queued["run_id"])["epochs_total"])
    if show:
        from IPython.display import display

        display(handle.widget)
    if wait:
        handle.wait()
    return handle


def watch(target: Any, **options: Any) -> Any:
    """``watch(run_id)``: show any run (started by any face) live in this cell, a
    ``NotebookRun``. ``watch(model, log_every=100)``: hooks on a torch module logging TFLOPS
    and per-layer norms to the current tracked run (``workbench.track.watch``)."""
    if isinstance(target, str):
        return _show_run(target)
    return _watch_model(target, **options)


def _show_run(run_id: str) -> NotebookRun:
    c = client()
    handle = NotebookRun(c, run_id, c.get_run(run_id)["epochs_total"])
    from IPython.display import display

    display(handle.widget)
    return handle


def runs(*, filter: str | None = None, state: str | None = None,  # noqa: A002
         model_id: str | None = None, experiment: str | None = None,
         columns: list[str] | None = None, sort: str = "-created_at", limit: int = 1000) -> Any:
    """The runs table as a pandas DataFrame, newest first (``.head()`` is the latest run).

    ``filter`` in the runs filter syntax (``"val_accuracy > 0.9 and tag:baseline"``);
    ``model_id`` a model's id or name; ``columns`` any of the runs table's; ``sort`` a column,
    ``-`` first for descending."""
    import pandas as pd

    parts = [f"({filter})"] if filter else []
    for column, value in (("state", state), ("experiment", experiment)):
        if value:
            parts.append(f"{column} = {_quoted(value)}")
    if model_id:
        parts.append(f"(model_id = {_quoted(model_id)} or model = {_quoted(model_id)})")
    c = client()
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    shown: list[str] = list(columns or [])
    while offset is not None and len(items) < limit:
        page = c.runs_table(filter=" and ".join(parts) or None, sort=sort, columns=columns,
                            limit=min(1000, limit - len(items)), offset=offset)
        items += page["items"]
        shown = page["columns"]
        offset = page["next_offset"]
    frame = pd.DataFrame(items, columns=shown)
    for column in [c for c in shown if c.endswith("_at")]:
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def update_run(run_id: str, *, name: str | None = None, experiment: str | None = None,
               tags: list[str] | None = None, notes: str | None = None) -> dict[str, Any]:
    """Rename a run, move it to an experiment, replace its tags or notes."""
    return client().update_run(run_id, name=name, experiment=experiment, tags=tags, notes=notes)


def pause(run_id: str) -> dict[str, Any]:
    """Pause a run: it checkpoints at the end of its current epoch and stops ``paused``."""
    return client().pause(run_id)


def resume(run_id: str, *, target: str | None = None) -> dict[str, Any]:
    """Continue a paused run from its last checkpoint, here or on ``target``."""
    return client().resume(run_id, target=target)


def compare(run_ids: list[str], *, metrics: list[str] | None = None, x: str = "epoch") -> Any:
    """The settings of runs side by side (a DataFrame, one column per run name; the
    ``differs`` column marks what differs). ``report`` draws their curves."""
    import pandas as pd

    data = client().compare_runs(run_ids, metrics=metrics, x=x)
    names = [data["names"][r] for r in data["run_ids"]]
    frame = pd.DataFrame([d["values"] for d in data["diff"]], columns=names,
                         index=[d["key"] for d in data["diff"]])
    frame["differs"] = [d["differs"] for d in data["diff"]]
    return frame


def report(run_ids: list[str], path: str | None = None, *, metrics: list[str] | None = None,
           x: str = "epoch", title: str | None = None) -> Any:
    """A self-contained HTML report of the runs: written to ``path`` when given, shown
    inline otherwise."""
    page = client().report(run_ids, metrics=metrics, x=x, title=title)
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
        return path
    from IPython.display import HTML

    return HTML(page)


def sweep(spec: dict[str, Any] | None = None, *, wait: bool = True,
          timeout: float | None = None, **fields: Any) -> Any:
    """Run an Optuna sweep (``workbench.sweeps.spec``; keyword fields are merged into
    ``spec``): with ``wait`` a live bar of trials, then its trials as a DataFrame (``.attrs``
    holds the sweep: ``best``, ``sweep_id``, ``state``); else the sweep as started."""
    c = client()
    started = c.sweep({**(spec or {}), **fields})
    if not wait:
        return started
    return sweep_trials(c.wait_sweep(started["sweep_id"], timeout=timeout)["sweep_id"])


def sweep_trials(sweep_id: str) -> Any:
    """A sweep's trials as a DataFrame: number, state, value, one column per parameter,
    layer sizes, run id (``.attrs``: the sweep, with parameter importances)."""
    import pandas as pd

    data = client().get_sweep(sweep_id, importance=True)
    rows = [{"trial": t["number"], "state": t["state"], data["objective"]: t["value"],
             **t["params"], "layers": "-".join(map(str, t["layer_sizes"] or [])),
             "run_id": t["run_id"], "error": t["error"]} for t in data["trials"]]
    frame = pd.DataFrame(rows)
    frame.attrs.update({k: v for k, v in data.items() if k != "trials"})
    return frame


def sweeps() -> Any:
    """Every sweep as a DataFrame, newest first: state, trials done, pruned, best value."""
    import pandas as pd

    rows = [{"sweep_id": s["sweep_id"], "name": s["name"], "state": s["state"],
             "experiment": s["experiment"], "trials": s["counts"]["total"],
             "pruned": s["counts"]["pruned"], "objective": s["objective"],
             "best": (s["best"] or {}).get("value"), "best_run": (s["best"] or {}).get("run_id"),
             "created_at": s["created_at"]} for s in client().sweeps()]
    return pd.DataFrame(rows)


def sql(query: str, *, limit: int = 10_000) -> Any:
    """Read-only SQL over the store's views, as a pandas DataFrame."""
    import pandas as pd

    result = client().sql(query, limit=limit)
    return pd.DataFrame(result["rows"], columns=result["columns"])


def infer(param_id: str, inputs: Any, **flags: bool) -> dict[str, Any]:
    """Inference with a trained model: inputs (n, 784) normalized as in training."""
    return client().infer(param_id, np.asarray(inputs, dtype=np.float32), **flags)


def app(*, base_url: str = "/", height: int = 900) -> Any:
    """The full app inline: JupyterLab's ``/workbench/`` (the launcher tile's proxy to the same
    owner this notebook uses) in an IFrame. ``base_url``: the Jupyter server's base URL."""
    from IPython.display import IFrame

    client()  # make sure the owner runs before the frame asks for it
    return IFrame(src=base_url.rstrip("/") + "/workbench/", width="100%", height=height)
