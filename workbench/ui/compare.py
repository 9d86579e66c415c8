"""Compare the selected runs (the Runs tab's lower half): the settings diff with what differs
highlighted, several metrics at once (smoothing, log axes, x by epoch / step / time, legends by
run name), parallel coordinates of parameters against a metric, a scatter of any two columns,
and a download of the static HTML report.

Everything comes from ``service.compare_runs`` / ``service.runs_report`` -- what
``POST /api/runs/compare`` and ``/report`` answer -- and the figures from
:mod:`workbench.service.charts`, the same ones the report draws.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import panel as pn
import param
from panel.viewable import Viewer

from ..service.charts import CHART_CONFIG, metric_figure, parallel_figure, scatter_figure
from ..service.compare import X_AXES
from ..service.report import TABLE_STYLE, html_table
from .state import AppState

METRICS = ["val_loss", "val_accuracy", "train_loss", "train_accuracy", "samples_per_s",
           "total_tflops"]
PARALLEL_PARAMS = ["optimizer", "lr", "batch_size", "epochs", "architecture"]
NUMERIC = ["lr", "batch_size", "epochs", "duration_s", "best_val_accuracy",
           "final_val_accuracy", "best_val_loss", "final_val_loss", "final_train_loss",
           "test_accuracy", "test_loss", "samples_per_s", "total_tflops"]


class CompareView(Viewer):
    """Diff, curves, parallel coordinates and scatter of ``run_ids`` (and the table's rows)."""

    state = param.ClassSelector(class_=AppState)
    run_ids = param.List(default=[], doc="the runs compared, in selection order")
    rows = param.List(default=[], doc="runs-table rows shown (group-by values; the plots when "
                                      "plot_shown)")
    plot_shown = param.Boolean(default=False, doc="parallel coordinates and scatter of every "
                               "run shown in the table, not only of the compared ones")
    metrics = param.ListSelector(default=["val_loss", "val_accuracy"], objects=METRICS)
    x = param.Selector(default="epoch", objects=list(X_AXES))
    smoothing = param.Number(default=0.0, bounds=(0.0, 0.99), step=0.05,
                             doc="EMA weight (0: raw points)")
    log_x = param.Boolean(default=False)
    log_y = param.Boolean(default=False)
    only_differences = param.Boolean(default=True, doc="the diff shows what differs only")
    parallel_params = param.ListSelector(default=["optimizer", "lr", "batch_size"],
                                         objects=PARALLEL_PARAMS)
    parallel_metric = param.Selector(default="best_val_accuracy", objects=NUMERIC)
    scatter_x = param.Selector(default="lr", objects=NUMERIC)
    scatter_y = param.Selector(default="best_val_accuracy", objects=NUMERIC)
    group_by = param.Selector(default="", objects=["", "optimizer", "lr", "batch_size",
                                                   "epochs", "architecture", "experiment",
                                                   "model", "dataset"],
                              doc="one mean curve per value of this column ('': per run)")
    image_format = param.Selector(default="png", objects=["png", "svg"],
                                  doc="what each chart's camera button downloads")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self._data: dict[str, Any] | None = None
        self._diff = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["compare-diff"])
        self._charts = pn.Column(sizing_mode="stretch_width", css_classes=["compare-charts"])
        # Hidden until there is something to plot: a browser draws parallel coordinates with
        # WebGL (software-rendered without a GPU), over 2,000 runs that took seconds. Empty
        # until then (no figure: a process's first one loads plotly's template, ~0.2 s).
        self._parallel = pn.pane.Plotly(None, sizing_mode="stretch_width", height=360,
                                        config=CHART_CONFIG, css_classes=["chart-parallel"],
                                        visible=False)
        self._scatter = pn.pane.Plotly(None, sizing_mode="stretch_width", height=340,
                                       config=CHART_CONFIG, css_classes=["chart-scatter"],
                                       visible=False)
        self._load()
        self._draw_plots()

    def _config(self) -> dict[str, Any]:
        return {**CHART_CONFIG, "toImageButtonOptions": {
            **CHART_CONFIG["toImageButtonOptions"], "format": self.image_format}}

    @param.depends("image_format", watch=True)
    def _set_image_format(self) -> None:
        for pane in [self._parallel, self._scatter, *self._charts.objects]:
            pane.config = self._config()

    # ---- data ------------------------------------------------------------------------------
    @param.depends("run_ids", "metrics", "x", watch=True)
    def _load(self) -> None:
        if not self.run_ids:
            self._data = None
        else:
            self._data = self.state.service.compare_runs(
                list(self.run_ids), metrics=list(self.metrics), x=self.x)
        self._draw_diff()
        self._draw_charts()

    @param.depends("only_differences", watch=True)
    def _draw_diff(self) -> None:
        if self._data is None:
            self._diff.object = "<p class='wb-muted'>Tick runs in the table to compare them.</p>"
            return
        names = [self._data["names"][r] for r in self._data["run_ids"]]
        diff = [d for d in self._data["diff"] if d["differs"] or not self.only_differences]
        self._diff.object = f"<style>{TABLE_STYLE}</style>" + html_table(
            ["setting", *names], [[d["key"], *d["values"]] for d in diff],
            ["differs" if d["differs"] else "" for d in diff], css="diff")

    def _groups(self) -> dict[str, str] | None:
        if not self.group_by or self._data is None:
            return None
        values = {r.get("run_id"): r.get(self.group_by) for r in self.rows}
        return {run_id: f"{self.group_by}={values.get(run_id)}"
                for run_id in self._data["run_ids"]}

    @param.depends("smoothing", "log_x", "log_y", "group_by", watch=True)
    def _draw_charts(self) -> None:
        if self._data is None:
            self._charts.objects = []
            return
        groups = self._groups()
        self._charts.objects = [
            pn.pane.Plotly(metric_figure(self._data["series"], metric, self._data["names"],
                                         x=self.x, smoothing=self.smoothing, log_x=self.log_x,
                                         log_y=self.log_y, groups=groups),
                           sizing_mode="stretch_width", height=320, config=self._config(),
                           css_classes=["chart-compare", f"chart-compare-{metric}"])
            for metric in self.metrics]

    def plotted_rows(self) -> list[dict[str, Any]]:
        """The runs the parallel coordinates and scatter draw: the compared ones, or every run
        shown in the table when ``plot_shown``."""
        if self.plot_shown:
            return list(self.rows)
        chosen = set(self.run_ids)
        return [r for r in self.rows if r.get("run_id") in chosen]

    @param.depends("rows", "run_ids", "plot_shown", "parallel_params", "parallel_metric",
                   "scatter_x", "scatter_y", "log_x", "log_y", watch=True)
    def _draw_plots(self) -> None:
        rows = self.plotted_rows()
        self._parallel.visible = self._scatter.visible = bool(rows)
        if not rows:  # nothing drawn, and no figure built for nothing
            self._parallel.object = self._scatter.object = None
            return
        self._parallel.object = parallel_figure(rows, list(self.parallel_params),
                                                self.parallel_metric)
        self._scatter.object = scatter_figure(rows, self.scatter_x, self.scatter_y,
                                              log_x=self.log_x, log_y=self.log_y)

    def report_html(self) -> str:
        return self.state.service.runs_report(list(self.run_ids), metrics=list(self.metrics),
                                              x=self.x)

    def _report_file(self) -> io.BytesIO:
        return io.BytesIO(self.report_html().encode() if self.run_ids else b"")

    def diff_frame(self) -> pd.DataFrame:
        """The diff as a DataFrame (tests, and a quick look in a notebook)."""
        if self._data is None:
            return pd.DataFrame()
        names = [self._data["names"][r] for r in self._data["run_ids"]]
        return pd.DataFrame([[d["key"], *d["values"], d["differs"]] for d in self._data["diff"]],
                            columns=["setting", *names, "differs"])

    # ---- view ----------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        w = pn.widgets
        download = w.FileDownload(callback=self._report_file, filename="runs-report.html",
                                  label="Download HTML report", color="success",
                                  css_classes=["download-report"], width=220)
        controls = pn.FlexBox(  # wraps at narrow widths (no sideways scroll)
            w.MultiChoice.from_param(self.param.metrics, name="Metrics", width=300),
            w.Select.from_param(self.param.x, name="x axis", width=110),
            w.Select.from_param(self.param.group_by, name="Group by", width=130),
            w.FloatSlider.from_param(self.param.smoothing, name="Smoothing", width=160),
            pn.Column(w.Checkbox.from_param(self.param.log_x, name="log x"),
                      w.Checkbox.from_param(self.param.log_y, name="log y"), margin=(18, 5)),
            w.Select.from_param(self.param.image_format, name="Chart download", width=110),
            pn.Column(download, margin=(18, 5)),
        )
        plots = pn.Column(  # stacked: side by side they overflow 1024 px
            pn.Column(pn.Row(
                w.MultiChoice.from_param(self.param.parallel_params, name="Parameters",
                                         width=260),
                w.Select.from_param(self.param.parallel_metric, name="against", width=170),
                pn.Column(w.Checkbox.from_param(self.param.plot_shown,
                                                name="all runs in the table, not only ticked"),
                          margin=(18, 5))),
                self._parallel, sizing_mode="stretch_width"),
            pn.Column(pn.Row(
                w.Select.from_param(self.param.scatter_x, name="Scatter x", width=170),
                w.Select.from_param(self.param.scatter_y, name="y", width=170)),
                self._scatter, sizing_mode="stretch_width"),
            sizing_mode="stretch_width")
        return pn.Column(
            controls,
            pn.Row(w.Checkbox.from_param(self.param.only_differences,
                                         name="only settings that differ")),
            self._diff, self._charts, plots, sizing_mode="stretch_width")
