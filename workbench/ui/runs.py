"""Runs: every run in the store as a sortable, filterable table; overlay the curves of the
selected runs; a read-only SQL box; the achieved-TFLOPS history per device.

Everything is read through the service (``list_runs``, ``get_metrics``, ``query``), the same
calls the REST API makes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param
import plotly.graph_objects as go
from panel.viewable import Viewer

from ..store.entities import RUN_STATES, RunRecord
from .state import AppState
from .theme import escape_markdown, html

MAX_RUNS = 2000  # the table pages in the browser; this bounds what one refresh reads
DEFAULT_SQL = (
    "SELECT name, count(*) AS points, round(max(value), 4) AS max_value\n"
    "FROM metrics GROUP BY name ORDER BY name"
)
_COLUMNS = ["run_id", "model", "state", "dataset", "target", "device", "epoch", "epochs",
            "val_accuracy", "val_loss", "samples_per_s", "total_tflops", "created", "param_id"]


def all_runs(service: Any, **filters: Any) -> list[RunRecord]:
    """Every run matching ``filters``, newest first (bounded by ``MAX_RUNS``)."""
    runs: list[RunRecord] = []
    cursor = None
    while len(runs) < MAX_RUNS:
        page, cursor = service.list_runs(order="desc", limit=500, cursor=cursor, **filters)
        runs += page
        if cursor is None:
            break
    return runs


def runs_frame(runs: list[RunRecord], model_names: dict[str, str]) -> pd.DataFrame:
    rows = [{
        "run_id": r.run_id, "model": model_names.get(r.model_id, r.model_id),
        "state": r.state, "dataset": r.dataset, "target": r.target, "device": r.device or "",
        "epoch": r.epoch, "epochs": r.epochs_total,
        "val_accuracy": r.metrics.get("val_accuracy"), "val_loss": r.metrics.get("val_loss"),
        "samples_per_s": r.metrics.get("samples_per_s"),
        "total_tflops": r.metrics.get("total_tflops"),
        "created": r.created_at.strftime("%Y-%m-%d %H:%M:%S"), "param_id": r.param_id or "",
    } for r in runs]
    return pd.DataFrame(rows, columns=_COLUMNS).round(
        {"val_accuracy": 4, "val_loss": 4, "samples_per_s": 0, "total_tflops": 6})


def tflops_history(runs: list[RunRecord]) -> go.Figure:
    """Achieved total TFLOPS of each finished run over time, one line per device."""
    fig = go.Figure(layout=dict(
        title=dict(text="Achieved TFLOPS of runs, by device", x=0.02, font=dict(size=14)),
        template="plotly_white", height=300, margin=dict(l=50, r=20, t=40, b=40),
        yaxis=dict(title="TFLOPS (train)"), legend=dict(orientation="h", y=-0.25)))
    by_device: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.state == "succeeded" and r.metrics.get("total_tflops") is not None:
            by_device.setdefault(r.device or "?", []).append(r)
    for device, rs in sorted(by_device.items()):
        rs.sort(key=lambda r: r.finished_at or r.created_at)
        fig.add_scatter(x=[r.finished_at or r.created_at for r in rs],
                        y=[r.metrics["total_tflops"] for r in rs], name=device,
                        mode="lines+markers", text=[r.run_id for r in rs])
    return fig


class RunsView(Viewer):
    """Table + comparison + SQL + TFLOPS history."""

    state = param.ClassSelector(class_=AppState)
    state_filter = param.ListSelector(default=[], objects=list(RUN_STATES))
    model_filter = param.String(default="", doc="substring of the model name or id")
    dataset_filter = param.Selector(default="", objects=["", "mnist", "fashion-mnist"])
    selected = param.List(default=[], doc="run ids whose curves are overlaid")
    metric = param.Selector(default="val_loss", objects=[
        "val_loss", "val_accuracy", "train_loss", "train_accuracy", "total_tflops",
        "samples_per_s"])
    sql = param.String(default=DEFAULT_SQL)
    sql_error = param.String(default="")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self._table = pn.widgets.Tabulator(
            pd.DataFrame(columns=_COLUMNS), selectable="checkbox", pagination="local",
            page_size=12, sizing_mode="stretch_width", show_index=False, disabled=True,
            header_filters=False, css_classes=["runs-table"], height=420,
            formatters={"val_accuracy": {"type": "progress", "max": 1, "legend": True}},
        )
        self._table.param.watch(self._on_select, "selection")
        self._compare = pn.pane.Plotly(go.Figure(), sizing_mode="stretch_width", height=320,
                                       config={"displaylogo": False})
        self._history = pn.pane.Plotly(go.Figure(), sizing_mode="stretch_width", height=320,
                                       config={"displaylogo": False}, css_classes=["chart-tflops-history"])
        self._sql_result = pn.widgets.Tabulator(
            pd.DataFrame(), sizing_mode="stretch_width", show_index=False, disabled=True,
            pagination="local", page_size=15, css_classes=["sql-result"], height=300)
        self._runs: list[RunRecord] = []
        self.refresh()
        self.run_sql()

    # ---- data ------------------------------------------------------------------------------
    @param.depends("state_filter", "dataset_filter", "model_filter", "state.runs_changed",
                   watch=True)
    def refresh(self) -> None:
        service = self.state.service
        filters: dict[str, Any] = {}
        if self.state_filter:
            filters["state"] = list(self.state_filter)
        if self.dataset_filter:
            filters["dataset"] = self.dataset_filter
        runs = all_runs(service, **filters)
        names = {m.model_id: m.name for m in service.list_models(limit=10_000)}
        if self.model_filter:
            needle = self.model_filter.lower()
            runs = [r for r in runs
                    if needle in r.model_id.lower() or needle in names.get(r.model_id, "").lower()]
        self._runs = runs
        self._table.value = runs_frame(runs, names)
        self._history.object = tflops_history(all_runs(service) if filters else runs)
        self._draw_compare()

    def _on_select(self, event: param.parameterized.Event) -> None:
        frame = self._table.value
        self.selected = [frame.iloc[i]["run_id"] for i in event.new if i < len(frame)]

    @param.depends("selected", "metric", watch=True)
    def _draw_compare(self) -> None:
        fig = go.Figure(layout=dict(
            title=dict(text=f"{self.metric} of selected runs", x=0.02, font=dict(size=14)),
            template="plotly_white", height=320, margin=dict(l=50, r=20, t=40, b=40),
            xaxis=dict(title="epoch"), yaxis=dict(title=self.metric),
            legend=dict(orientation="h", y=-0.25)))
        for run_id in self.selected:
            points = self.state.service.store.get_metrics(run_id, names=[self.metric])
            fig.add_scatter(x=[p.epoch for p in points], y=[p.value for p in points],
                            name=run_id[:10], mode="lines+markers")
        self._compare.object = fig

    def run_sql(self) -> None:
        """Run ``sql`` read-only; the result goes to the table, errors to ``sql_error``."""
        try:
            columns, rows = self.state.service.query(self.sql)
        except (PermissionError, ValueError) as exc:
            self.sql_error = str(exc)
            return
        self.sql_error = ""
        frame = pd.DataFrame([list(r) for r in rows], columns=columns)
        # Tabulator wants unique string column names
        frame.columns = [f"{c}" if list(columns).count(c) == 1 else f"{c}_{i}"
                         for i, c in enumerate(columns)]
        self._sql_result.value = frame

    # ---- view ----------------------------------------------------------------------------
    def open_selected(self) -> None:
        if self.selected:
            self.state.run_id = self.selected[-1]

    @param.depends("sql_error")
    def _sql_error_view(self) -> pn.viewable.Viewable:
        return pn.pane.Alert(escape_markdown(self.sql_error), alert_type="danger",
                             visible=bool(self.sql_error),
                             css_classes=["sql-error"], sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        w = pn.widgets
        refresh = w.Button(name="↻ Refresh", width=100)
        refresh.on_click(lambda _: self.refresh())
        open_live = w.Button(name="Open in live view", width=150, button_type="primary")
        open_live.on_click(lambda _: self.open_selected())
        run = w.Button(name="Run query", button_type="primary", css_classes=["run-sql"],
                       width=120)
        run.on_click(lambda _: self.run_sql())
        filters = pn.Row(
            w.MultiChoice.from_param(self.param.state_filter, name="State", width=260),
            w.TextInput.from_param(self.param.model_filter, name="Model", width=200,
                                   placeholder="name or id"),
            w.Select.from_param(self.param.dataset_filter, name="Dataset", width=160),
            pn.Column(pn.Row(refresh, open_live), margin=(18, 0)),
        )
        sql_box = w.TextAreaInput.from_param(
            self.param.sql, name="Read-only SQL (DuckDB)", height=110,
            sizing_mode="stretch_width", css_classes=["sql-input"])
        return pn.Column(
            filters,
            self._table,
            pn.Row(w.Select.from_param(self.param.metric, name="Compare metric", width=200)),
            pn.Row(self._compare, self._history, sizing_mode="stretch_width"),
            html("<h3 class='wb-h'>Ad-hoc SQL</h3>"),
            sql_box, run, self._sql_error_view, self._sql_result,
            sizing_mode="stretch_width",
        )
