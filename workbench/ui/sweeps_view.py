"""Sweeps: every Optuna sweep (``workbench.sweeps``), and one sweep's trials, best so far,
parallel coordinates of its parameters against the objective and parameter importances
(``optuna.importance``, fANOVA).

Read through the service's ``Sweeps`` facade in the owner (``state.service.sweeps``), never
over HTTP; a running sweep is re-read every few seconds while the tab is open. Cancelling is
the app's ``train`` scope, like cancelling a run.
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param
import plotly.graph_objects as go
from panel.viewable import Viewer

from ..service.charts import CHART_CONFIG, parallel_figure
from .state import AppState
from .theme import escape_html, html

REFRESH_MS = 3000
STATE_COLOURS = {"complete": "#2563eb", "pruned": "#f97316", "failed": "#dc2626",
                 "running": "#94a3b8"}

TABLE_CSS = """
.wb-sweeps { border-collapse: collapse; width: 100%; font-size: 13px; }
.wb-sweeps th { text-align: left; color: #64748b; font-weight: 600; font-size: 11px;
  text-transform: uppercase; letter-spacing: .04em; border-bottom: 1px solid #e2e8f0; }
.wb-sweeps td, .wb-sweeps th { padding: 5px 9px; }
.wb-sweeps tr:nth-child(even) td { background: #f8fafc; }
.wb-sweeps tr.best td { font-weight: 600; }
"""


def _value(v: Any) -> str:
    return "–" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def trials_table(sweep: dict[str, Any]) -> str:
    """One row per trial (the best one in bold): state, value, parameters, layers, run."""
    trials = sweep.get("trials") or []
    if not trials:
        return "<div class='wb-empty'>No trials yet.</div>"
    names = sorted({k for t in trials for k in t["params"]})
    best = (sweep.get("best") or {}).get("number")
    head = "".join(f"<th>{escape_html(h)}</th>" for h in
                   ["trial", "state", sweep["objective"], *names, "layers", "run", "note"])
    rows = []
    for t in trials:
        cells = [t["number"], t["state"], _value(t["value"]),
                 *(_value(t["params"].get(n)) for n in names),
                 "-".join(map(str, t["layer_sizes"] or [])), t["run_id"] or "–",
                 (f"pruned at epoch {t['pruned_at_epoch']}" if t["pruned_at_epoch"] else
                  t["error"] or "")]
        css = " class='best'" if t["number"] == best else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{escape_html(c)}</td>" for c in cells)
                    + "</tr>")
    return f"<table class='wb-sweeps'><tr>{head}</tr>{''.join(rows)}</table>"


def summary_html(sweep: dict[str, Any]) -> str:
    c, best = sweep["counts"], sweep["best"]
    text = (f"<p><b>{escape_html(sweep['name'])}</b> · {escape_html(sweep['state'])} · "
            f"{c['complete'] + c['pruned'] + c['failed']}/{_value(sweep['budget_trials'])} "
            f"trials ({c['pruned']} pruned, {c['failed']} failed, {c['running']} running) · "
            f"{escape_html(sweep['sampler'])} sampler, {escape_html(sweep['pruner'])} pruner "
            f"· experiment <code>{escape_html(sweep['experiment'])}</code></p>")
    if best is not None:
        text += (f"<p>Best so far: trial {best['number']}, {escape_html(sweep['objective'])} "
                 f"<b>{best['value']:.4f}</b> · run <code>{escape_html(best['run_id'])}</code> "
                 f"· {escape_html(', '.join(f'{k}={_value(v)}' for k, v in best['params'].items()))}"
                 "</p>")
    if sweep.get("error"):
        text += f"<p class='wb-error'>{escape_html(sweep['error'])}</p>"
    return text


def best_so_far_figure(sweep: dict[str, Any]) -> go.Figure:
    """Each trial's value (pruned ones at their last reported epoch) and the best so far."""
    maximize = sweep["direction"] == "maximize"
    fig = go.Figure(layout=dict(
        title=dict(text=f"{sweep['objective']} by trial", x=0.02, font=dict(size=14)),
        template="plotly_white", height=300, margin=dict(l=55, r=20, t=40, b=40),
        xaxis=dict(title="trial"), yaxis=dict(title=sweep["objective"]),
        legend=dict(orientation="h", y=-0.25)))
    best, xs, ys = None, [], []
    for state in ("complete", "pruned", "failed"):
        points = [(t["number"], t["value"] if t["value"] is not None else
                   (list(t["intermediate"].values()) or [None])[-1])
                  for t in sweep.get("trials") or [] if t["state"] == state]
        points = [p for p in points if p[1] is not None]
        if points:
            fig.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="markers",
                            name=state, marker=dict(color=STATE_COLOURS[state], size=9))
    for t in sweep.get("trials") or []:
        if t["state"] == "complete" and t["value"] is not None:
            if best is None or (t["value"] > best if maximize else t["value"] < best):
                best = t["value"]
            xs.append(t["number"])
            ys.append(best)
    if xs:
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", color="#059669"),
                        name="best so far")
    return fig


def importance_figure(importance: dict[str, float]) -> go.Figure:
    fig = go.Figure(layout=dict(
        title=dict(text="parameter importance (fANOVA)", x=0.02, font=dict(size=14)),
        template="plotly_white", height=220, margin=dict(l=100, r=20, t=40, b=30)))
    names = list(importance)[::-1]
    fig.add_bar(x=[importance[n] for n in names], y=names, orientation="h",
                marker_color="#7c3aed")
    return fig


def parallel_rows(sweep: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Complete trials as rows of their parameters and the objective."""
    trials = [t for t in sweep.get("trials") or [] if t["state"] == "complete"]
    names = sorted({k for t in trials for k in t["params"]})
    return [{**t["params"], sweep["objective"]: t["value"]} for t in trials], names


class SweepsView(Viewer):
    """The sweeps list; the chosen sweep's summary, trials, charts; cancel."""

    state = param.ClassSelector(class_=AppState)
    sweep_id = param.Selector(default=None, objects=[], allow_None=True, doc="the sweep shown")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self._summary = html("", sizing_mode="stretch_width")
        self._trials = html("", sizing_mode="stretch_width", css_classes=["wb-sweep-trials"])
        self._trials.stylesheets = [*self._trials.stylesheets, TABLE_CSS]
        self._best = pn.pane.Plotly(go.Figure(), height=300, sizing_mode="stretch_width",
                                    config=CHART_CONFIG, css_classes=["chart-sweep-best"])
        self._parallel = pn.pane.Plotly(go.Figure(), height=360, sizing_mode="stretch_width",
                                        config=CHART_CONFIG, css_classes=["chart-sweep-parallel"])
        self._importance = pn.pane.Plotly(go.Figure(), height=220, sizing_mode="stretch_width",
                                          config=CHART_CONFIG,
                                          css_classes=["chart-sweep-importance"])
        self._cancel = pn.widgets.Button(label="Cancel sweep", color="danger", width=130,
                                         visible=False)
        self._cancel.on_click(lambda _: self.cancel())
        self._callback: Any = None
        self.sweep: dict[str, Any] | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the sweeps and the chosen one."""
        sweeps = self.state.service.sweeps.list()
        ids = [s["sweep_id"] for s in sweeps]
        self.param.sweep_id.objects = {f"{s['name']} · {s['state']} · {s['sweep_id']}":
                                       s["sweep_id"] for s in sweeps}
        if self.sweep_id not in ids:
            self.sweep_id = ids[0] if ids else None
        self._show()

    @param.depends("sweep_id", watch=True)
    def _show(self) -> None:
        if self.sweep_id is None:
            self.sweep = None
            self._summary.object = ("<div class='wb-empty'>No sweeps yet. Start one with "
                                    "<code>workbench sweep spec.json</code>, "
                                    "<code>wb.sweep({...})</code> or <code>POST "
                                    "/api/sweeps</code>.</div>")
            self._trials.object = ""
            for pane in (self._best, self._parallel, self._importance):
                pane.visible = False
            self._cancel.visible = False
            return
        sweep = self.state.service.sweeps.get(self.sweep_id, importance=True)
        self.sweep = sweep
        self._summary.object = summary_html(sweep)
        self._trials.object = trials_table(sweep)
        self._best.object = best_so_far_figure(sweep)
        rows, names = parallel_rows(sweep)
        self._parallel.object = parallel_figure(rows, names, sweep["objective"]) if rows \
            else go.Figure()
        self._importance.object = importance_figure(sweep.get("importance") or {})
        self._best.visible = bool(sweep["trials"])
        self._parallel.visible = bool(rows)
        self._importance.visible = bool(sweep.get("importance"))
        self._cancel.visible = sweep["state"] == "running"

    def cancel(self) -> None:
        if self.sweep_id is not None:
            self.state.service.sweeps.cancel(self.sweep_id)
            self.refresh()

    def _tick(self) -> None:
        if self.sweep is not None and self.sweep["state"] == "running":
            self.refresh()

    def __panel__(self) -> pn.viewable.Viewable:
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None \
                and self._callback is None:
            self._callback = pn.state.add_periodic_callback(self._tick, period=REFRESH_MS)
        refresh = pn.widgets.Button(label="↻ Refresh", width=100)
        refresh.on_click(lambda _: self.refresh())
        return pn.Column(
            pn.Row(pn.widgets.Select.from_param(self.param.sweep_id, label="Sweep", width=320),
                   pn.Column(refresh, margin=(18, 0)), pn.Column(self._cancel, margin=(18, 0))),
            self._summary, self._best,
            html("<h3 class='wb-h'>Trials</h3>"), self._trials,
            self._parallel, self._importance,
            sizing_mode="stretch_width",
        )
