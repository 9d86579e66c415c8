"""Live run view: loss, accuracy, throughput, achieved TFLOPS and memory of one run, as it trains.

Events arrive on the service's ``EventBus`` from executor threads. The bus callback only appends
to an inbox (thread-safe, no Bokeh document access); a periodic callback running in the
session's own document context drains it every 250 ms and redraws the charts. So a chart shows
an epoch well within 1 s of its end, with no page reload and no cross-thread document writes.
Opening a run that already has history loads it from the store first.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

import panel as pn
import param
import plotly.graph_objects as go
from panel.viewable import Viewer

from .. import events as ev
from .. import peaks
from .state import AppState, known_peak, peak
from .theme import escape_html, escape_markdown, html, mark_empty
from .tracked import TrackedSeries

POLL_MS = 250
PROGRESS_STEP = 0.005  # the bar moves in steps of half a percent (a redraw each)
NO_RUN = ("No run selected: set the hyperparameters on the left and press ▶ Launch training, "
          "or open a past run from the Runs tab.")
CHARTS = ("loss", "accuracy", "tflops", "throughput")
SMOOTHING = 0.6  # EMA weight of the previous smoothed step loss
COLORS = {"train": "#2563eb", "val": "#f97316", "step": "#94a3b8", "fwd": "#7c3aed",
          "bwd": "#db2777", "total": "#059669", "peak": "#ef4444", "mem": "#0891b2"}
_STATE_COLORS = {"queued": "#667085", "running": "#2563eb", "paused": "#6941c6",
                 "succeeded": "#067647",
                 "failed": "#b42318", "cancelled": "#b54708"}


def _layout(title: str, ytitle: str, **extra: Any) -> dict[str, Any]:
    return dict(
        title=dict(text=title, x=0.02, font=dict(size=14)),
        margin=dict(l=50, r=20, t=40, b=40), height=270, template="plotly_white",
        xaxis=dict(title="epoch"), yaxis=dict(title=ytitle),
        legend=dict(orientation="h", y=-0.25), uirevision="keep", **extra,
    )


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average (TensorBoard-style, debiased)."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def mfu_label(epoch: dict[str, Any]) -> str:
    """``"41.2% of bf16 spec"``: the epoch's MFU (reported by the training process on GPUs of
    known spec), or "–" (CPU, an unknown GPU: not guessed)."""
    mfu = epoch.get("mfu")
    if not isinstance(mfu, (int, float)):
        return "–"
    dtype = epoch.get("matmul_dtype")  # in the live event; not kept in the store
    return f"{100 * mfu:.1f}%" + (f" of {escape_html(str(dtype))} spec" if dtype else "")


class LiveRun(Viewer):
    """Charts and controls of ``state.run_id``."""

    state = param.ClassSelector(class_=AppState)
    run_id = param.String(default=None, allow_None=True)
    run_state = param.String(default="", doc="queued | running | paused | succeeded | failed | cancelled")
    epoch = param.Integer(default=0)
    epochs_total = param.Integer(default=0)
    error = param.String(default="", doc="the failure message of a failed run")
    device = param.String(default="")
    peak_tflops = param.Number(default=None, allow_None=True)
    epoch_points = param.Integer(default=0, doc="epochs drawn on the charts (a tracked run: "
                                 "points of its longest charted series)")
    progress = param.Number(default=0.0, bounds=(0.0, 1.0),
                            doc="share of the run's training steps done: moves inside an epoch")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self._inbox: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._unsubscribe: Any = None
        self._history: dict[int, dict[str, Any]] = {}
        self._steps: dict[int, float] = {}
        self._started: dict[str, Any] = {}
        self._tracked = TrackedSeries()  # a workbench.track run: whatever it logs, by step
        self._external = False
        self._dirty = False
        self._callback: Any = None
        empty = self.figures()  # no run yet: honest axes and what to do, from the first render
        self._panes = {k: pn.pane.Plotly(empty[k], sizing_mode="stretch_width",
                                         height=280, css_classes=[f"chart-{k}"],
                                         config={"displaylogo": False})
                       for k in CHARTS}
        self._cancel = pn.widgets.Button(label="■ Cancel run", color="danger",
                                         css_classes=["cancel-run"], width=130, disabled=True,
                                         visible=False)
        self._cancel.on_click(lambda _: self.cancel())
        # Pause (checkpoint at the epoch's end) / resume, while running or paused (issue 17).
        self._pause = pn.widgets.Button(label="⏸ Pause", css_classes=["pause-run"], width=130,
                                        visible=False)
        self._pause.on_click(lambda _: self.pause_or_resume())
        self.state.param.watch(lambda e: self.show(e.new), "run_id")
        if self.state.run_id:
            self.show(self.state.run_id)

    # ---- data in -------------------------------------------------------------------------
    def show(self, run_id: str | None) -> None:
        """Switch to ``run_id``: subscribe to its events, then load what is stored so far."""
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            self._inbox.clear()
        self._history, self._steps, self._started = {}, {}, {}
        self._tracked, self._external = TrackedSeries(), False
        self.run_id, self.error, self.epoch, self.epoch_points = run_id, "", 0, 0
        self.progress = 0.0
        if not run_id:
            self.run_state = ""
            self._redraw()
            return
        service = self.state.service
        # Subscribe before reading the store so no event falls between the two.
        self._unsubscribe = service.bus.subscribe(self._receive, run_id=run_id)
        run = service.get_run(run_id)
        self.run_state, self.epochs_total, self.epoch = run.state, run.epochs_total, run.epoch
        self.error = run.error or ""
        self._set_device(run.device, run.target)
        self._external = run.target == ev.EXTERNAL_TARGET
        for m in service.store.get_metrics(run_id):
            if self._external:
                self._tracked.add(m.name, m.value, m.step)
            elif m.name == "step_loss":
                if m.step is not None:
                    self._steps[m.step] = m.value
            else:
                self._history.setdefault(m.epoch, {"epoch": m.epoch})[m.name] = m.value
        self._dirty = True
        self.poll()

    def _receive(self, event: dict[str, Any]) -> None:
        """Bus callback (any thread): queue only; drawing happens in ``poll``."""
        with self._lock:
            self._inbox.append(event)

    def poll(self) -> bool:
        """Apply queued events and redraw if anything changed; True when it redrew."""
        with self._lock:
            events = list(self._inbox)
            self._inbox.clear()
        for event in events:
            self._apply(event)
        if not self._dirty:
            return False
        self._dirty = False
        self._redraw()
        self._update_progress()
        return True

    def _update_progress(self) -> None:
        """The bar follows the step events inside an epoch. Set once per poll (whatever
        number of steps arrived) and only when it moved by a visible amount, so the header is
        redrawn at most a few times a second however fast steps come."""
        if self.run_state == "succeeded":
            done = 1.0
        else:
            position = float(self.epoch)
            per_epoch = self._steps_per_epoch()
            if self._steps and per_epoch:
                position = max(position, max(self._steps) / per_epoch)
            done = min(position / self.epochs_total, 1.0) if self.epochs_total else 0.0
        if abs(done - self.progress) >= PROGRESS_STEP or (done == 1.0 != self.progress):
            self.progress = done

    def _apply(self, event: dict[str, Any]) -> None:
        kind, data = event.get("type"), event.get("data") or {}
        self._dirty = True
        if kind == ev.RUN_STARTED:
            self._started = data
            self.run_state = "running"
            self.epochs_total = int(data.get("epochs_total") or self.epochs_total)
            self._set_device(data.get("device"), None)
        elif kind == ev.STEP:
            self._steps[int(data["step"])] = float(data["loss"])
        elif kind == ev.EPOCH:
            self._history[int(data["epoch"])] = data
            self.epoch = int(data["epoch"])
            self.run_state = "running"
            total = data.get("total_tflops")
            if self.peak_tflops and isinstance(total, (int, float)) and total > self.peak_tflops:
                # Faster than the stored peak: the peak was low. Raise it (workbench.peaks),
                # so "share of peak" never passes 100 %.
                self.peak_tflops = peaks.observe(self.device or "cpu", total, probe=False)
        elif kind == ev.METRICS:  # a tracked run's batch of logged points
            self._external = True
            for name, value, step in ev.metric_points(data):
                self._tracked.add(name, value, step)
        elif kind == ev.RUN_COMPLETED:
            self.run_state = "succeeded"
            self.state.param.trigger("runs_changed")
        elif kind == ev.RUN_FAILED:
            self.run_state, self.error = "failed", str(data.get("error", "failed"))
            self.state.param.trigger("runs_changed")
        elif kind == ev.RUN_CANCELLED:
            self.run_state = "cancelled"
            self.state.param.trigger("runs_changed")
        elif kind == ev.RUN_PAUSED:
            self.run_state = "paused"
            self.state.param.trigger("runs_changed")
        elif kind == ev.RUN_RESUMED:
            self.run_state = "queued"

    def _set_device(self, device: str | None, target: str | None) -> None:
        if not device:
            return
        self.device = device
        run_target = target or "local"
        # The local probe says nothing about a remote node's device.
        if run_target.startswith("local"):
            try:
                self.peak_tflops = known_peak(device) if self.state.defer_peak else peak(device)
            except (RuntimeError, ValueError):
                self.peak_tflops = None

    def cancel(self) -> None:
        if self.run_id:
            self.state.service.cancel_run(self.run_id)

    def pause_or_resume(self) -> None:
        """Pause a running run, resume a paused one; a refusal (a target that cannot pause)
        shows as the run's error line."""
        if not self.run_id:
            return
        service = self.state.service
        try:
            if self.run_state == "paused":
                service.resume_run(self.run_id)
            else:
                service.pause_run(self.run_id)
                self._pause.disabled = True  # until the run.paused event arrives
        except ValueError as exc:  # Conflict
            self.error = str(exc)

    # ---- drawing -------------------------------------------------------------------------
    def _series(self, name: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for epoch in sorted(self._history):
            value = self._history[epoch].get(name)
            if value is not None and math.isfinite(value):
                xs.append(epoch)
                ys.append(value)
        return xs, ys

    def _empty(self, kind: str) -> go.Figure:
        titles = {"loss": ("Loss", "cross-entropy"), "accuracy": ("Accuracy", "accuracy"),
                  "tflops": ("Achieved TFLOPS", "TFLOPS"),
                  "throughput": ("Throughput & memory", "samples / s")}
        return go.Figure(layout=_layout(*titles[kind]))

    def figures(self) -> dict[str, go.Figure]:
        """The four charts for the current data (also used by tests)."""
        if self._external:
            return self._tracked_figures()
        figs = {k: self._empty(k) for k in CHARTS}
        line = dict(mode="lines+markers")
        steps = sorted(self._steps)
        per_epoch = self._steps_per_epoch()
        if steps and per_epoch:
            figs["loss"].add_scatter(
                x=[s / per_epoch for s in steps], y=smoothed([self._steps[s] for s in steps]),
                name="step loss (smoothed)", mode="lines", line=dict(color=COLORS["step"]))
        for split in ("train", "val"):
            x, y = self._series(f"{split}_loss")
            figs["loss"].add_scatter(x=x, y=y, name=f"{split} loss", line=dict(
                color=COLORS[split]), **line)
            x, y = self._series(f"{split}_accuracy")
            figs["accuracy"].add_scatter(x=x, y=y, name=f"{split} accuracy", line=dict(
                color=COLORS[split]), **line)
        for key, label in (("forward", "fwd"), ("backward", "bwd"), ("total", "total")):
            x, y = self._series(f"{key}_tflops")
            figs["tflops"].add_scatter(x=x, y=y, name=f"{key}", line=dict(
                color=COLORS[label]), **line)
        if self.peak_tflops:
            figs["tflops"].add_hline(
                y=self.peak_tflops, line=dict(color=COLORS["peak"], dash="dash"),
                annotation_text=f"measured peak {self.peak_tflops:.3g}")
        x, y = self._series("samples_per_s")
        figs["throughput"].add_bar(x=x, y=y, name="samples/s", marker_color=COLORS["train"])
        x, y = self._series("peak_memory_bytes")
        figs["throughput"].add_scatter(x=x, y=[v / 2**20 for v in y], name="peak memory (MiB)",
                                       yaxis="y2", line=dict(color=COLORS["mem"]), **line)
        x, y = self._series("system/rss_bytes")  # the training process (workbench.system_metrics)
        figs["throughput"].add_scatter(x=x, y=[v / 2**20 for v in y], name="process RSS (MiB)",
                                       yaxis="y2", line=dict(color=COLORS["mem"], dash="dot"),
                                       **line)
        figs["throughput"].update_layout(
            yaxis2=dict(title="MiB", overlaying="y", side="right", rangemode="tozero"))
        figs["accuracy"].update_yaxes(range=[0, 1])  # a share: never a range beyond 0..1
        epochs = (0, max(self.epochs_total, 1))
        text = ("waiting for the first epoch" if self.run_id
                else "no run yet")  # the header says how to start one
        for key, fig in figs.items():
            mark_empty(fig, text, x_range=epochs,
                       y_range=(0, max(self.peak_tflops or 1, 1)) if key == "tflops" else (0, 1))
        return figs

    def _tracked_figures(self) -> dict[str, go.Figure]:
        figs = self._tracked.figures(_layout)
        for fig in figs.values():
            mark_empty(fig, "waiting for the first logged point", y_range=(0, 1))
        return figs

    def _steps_per_epoch(self) -> float | None:
        if self._history:
            last = max(self._history)
            step = self._history[last].get("step")
            if step:
                return float(step) / last
        n, batch = self._started.get("n_train"), self._started.get("batch_size")
        return math.ceil(n / batch) if n and batch else None

    def _redraw(self) -> None:
        active = self.run_state in ("queued", "running")
        self._cancel.disabled = not active
        self._cancel.visible = active  # no dead control while nothing can be cancelled
        self._pause.visible = self.run_state in ("running", "paused")
        self._pause.disabled = False if self.run_state == "paused" else self._pause.disabled
        self._pause.label = "▶ Resume" if self.run_state == "paused" else "⏸ Pause"
        for key, fig in self.figures().items():
            self._panes[key].object = fig
        self.epoch_points = (len(self._tracked) if self._external
                             else len(self._series("train_loss")[0]))

    @param.depends("run_id", "run_state", "epoch", "epochs_total", "device", "peak_tflops",
                   "error", "progress")
    def _header(self) -> pn.viewable.Viewable:
        if not self.run_id:
            return html(f"<div class='wb-empty'>{NO_RUN}</div>")
        last = self._history[max(self._history)] if self._history else {}
        total = last.get("total_tflops")
        share = (f"{100 * total / self.peak_tflops:.1f}%" if total and self.peak_tflops
                 else "–")
        color = _STATE_COLORS.get(self.run_state, "#667085")
        done = 100.0 * self.progress
        kpi = "<div class='wb-kpi'><div class='k'>{}</div><div class='v'>{}</div></div>"
        fmt = (lambda v, f: f.format(v) if v is not None else "–")  # noqa: E731
        kpis = (
            "<div class='wb-kpis'>"
            + kpi.format("run", f"<code>{escape_html(self.run_id)}</code>")
            + kpi.format("state", f"<span class='wb-state' style='background:{color}'>"
                         f"{escape_html(self.run_state)}</span>")
            + kpi.format("epoch", f"<span class='wb-epoch'>{self.epoch}</span> / "
                         f"{self.epochs_total}")
            + kpi.format("done", f"<span class='wb-done'>{done:.0f}%</span>")
            + kpi.format("samples / s", fmt(last.get("samples_per_s"), "{:,.0f}"))
            + kpi.format("TFLOPS fwd / bwd",
                         f"{fmt(last.get('forward_tflops'), '{:.3g}')} / "
                         f"{fmt(last.get('backward_tflops'), '{:.3g}')}")
            + kpi.format("share of peak", share)
            + kpi.format("MFU", mfu_label(last))
            + kpi.format("device", escape_html(self.device or "–"))
            + "</div>"
            # a plain HTML bar: Panel's Progress widget re-sends CDN stylesheet URLs on update
            + f"<div class='wb-bar' role='progressbar' aria-label='training progress' "
            f"aria-valuenow='{done:.0f}' aria-valuemin='0' aria-valuemax='100'>"
            f"<div style='width:{done:.1f}%'></div></div>"
        )
        parts: list[Any] = [html(kpis, sizing_mode="stretch_width")]
        if self.error:
            # the error is user text (a worker's message, a data URL, a model name): escaped
            parts.append(pn.pane.Alert(f"<b>Run failed:</b> {escape_markdown(self.error)}",
                                       alert_type="danger",
                                       css_classes=["run-error"], sizing_mode="stretch_width"))
        return pn.Column(*parts, sizing_mode="stretch_width")

    def start_polling(self) -> None:
        """Drain the inbox from the session's event loop (call once per rendered session)."""
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.poll, period=POLL_MS)

    def close(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
            self._unsubscribe = None
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def __panel__(self) -> pn.viewable.Viewable:
        self.start_polling()
        return pn.Column(
            pn.Row(self._header, pn.Column(self._cancel, self._pause, margin=(14, 0)),
                   sizing_mode="stretch_width"),
            pn.GridBox(*self._panes.values(), ncols=2, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
