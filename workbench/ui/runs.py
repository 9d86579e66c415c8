"""Runs: the runs table (newest first; choose columns; a filter such as
``val_accuracy > 0.9 and tag:baseline``), rename / tag / annotate the selected run, compare the
selected runs (:mod:`workbench.ui.compare`), a read-only SQL box and the achieved-TFLOPS history.

Everything is read through the service (``runs_table``, ``compare_runs``, ``query``), the same
calls the REST API makes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param
import plotly.graph_objects as go
from panel.viewable import Viewer

from ..service.charts import CHART_CONFIG
from ..store.entities import RUN_STATES, RunRecord
from ..store.runs_table import BASE_COLUMNS, COLUMNS, METRIC_COLUMNS
from .after_paint import fill_after_paint
from .compare import CompareView
from .state import AppState
from .theme import escape_markdown, html

MAX_RUNS = 500  # the table pages in the browser; this bounds what one refresh reads
DEFAULT_SQL = (
    "SELECT name, count(*) AS points, round(max(value), 4) AS max_value\n"
    "FROM metrics GROUP BY name ORDER BY name"
)
# The table's default columns (the user chooses others under Columns): each shown column is
# three Bokeh models in the tab's first patch and 12 cells the browser draws (twice), so the
# default set is what most comparisons need; error, device, dataset, architecture... on request.
# The results come right after the name, so a 1280 px window shows them without scrolling.
_COLUMNS = ["run_id", "name", "state", "best_val_accuracy", "final_val_loss", "experiment",
            "tags", "model", "optimizer", "lr", "batch_size", "duration_s", "created_at"]
_FROZEN = ["run_id", "name"]  # kept in view while the table scrolls sideways
# What the charts below the table need from every row, shown or not.
_CHART_COLUMNS = ["run_id", "name", "experiment", "model", "dataset", "optimizer", "lr", "batch_size", "epochs", "architecture",
                  "duration_s", "best_val_accuracy", "final_val_accuracy", "best_val_loss",
                  "final_val_loss", "final_train_loss", "test_accuracy", "test_loss",
                  "samples_per_s", "total_tflops", "device", "state",
                  "finished_at", "created_at"]

# Fixed column widths (px): Tabulator then lays the table out without measuring every cell of
# every column (its fitData took a good part of the tab's first show with 10,000 runs). Wide
# enough for times (19 characters) and the headers; an id (34) shows its start, whole on hover.
_WIDTHS = {"run_id": 140, "model_id": 140, "param_id": 140, "name": 160, "experiment": 130,
           "tags": 130, "notes": 180, "error": 220, "model": 130, "architecture": 170,
           "state": 100, "dataset": 120, "target": 90, "device": 90, "optimizer": 100,
           "best_val_accuracy": 170}


# Tabulator's own formatters: Panel's default (a Bokeh formatter per column) renders every cell
# as HTML parsed in the browser, a good part of drawing the table. Numbers come rounded
# (runs_frame) and are right-aligned as before.
_NUMBERS = [c for c in COLUMNS if c in METRIC_COLUMNS or BASE_COLUMNS[c][1] == "number"]
_FORMATTERS: dict[str, Any] = {
    **{c: "plaintext" for c in COLUMNS},
    "best_val_accuracy": {"type": "progress", "max": 1, "legend": True},
}


def column_width(column: str) -> int:
    """The table's width of ``column``: its own, a time's, or its header's (numbers)."""
    if column in _WIDTHS:
        return _WIDTHS[column]
    if column.endswith("_at"):
        return 160
    return max(80, 9 * len(column) + 32)  # header text and the sort arrow


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


def runs_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Table rows for Tabulator: times as text, tags joined, floats rounded. Built column by
    column from the rows (a time column iterated back out of pandas cost ~1 s per 2,000)."""
    data: dict[str, list[Any]] = {}
    for column in columns:
        values = [r.get(column) for r in rows]
        if column.endswith("_at"):
            values = [v.strftime("%Y-%m-%d %H:%M:%S") if v is not None else "" for v in values]
        elif column == "tags":
            values = [", ".join(v or []) for v in values]
        data[column] = values
    frame = pd.DataFrame(data, columns=columns)
    rounding = {c: 4 for c in columns if "accuracy" in c or "loss" in c}
    rounding.update({c: 1 for c in ("duration_s",) if c in columns})
    rounding.update({c: 0 for c in ("samples_per_s",) if c in columns})
    return frame.round(rounding)


def tflops_history(rows: list[dict[str, Any]]) -> go.Figure:
    """Achieved total TFLOPS of each finished run over time, one line per device."""
    fig = go.Figure(layout=dict(
        title=dict(text="Achieved TFLOPS of runs, by device", x=0.02, font=dict(size=14)),
        template="plotly_white", height=300, margin=dict(l=50, r=20, t=40, b=40),
        yaxis=dict(title="TFLOPS (train)"), legend=dict(orientation="h", y=-0.25)))
    by_device: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("state") == "succeeded" and r.get("total_tflops") is not None:
            by_device.setdefault(r.get("device") or "?", []).append(r)
    for device, rs in sorted(by_device.items()):
        rs.sort(key=lambda r: r.get("finished_at") or r["created_at"])
        fig.add_scatter(x=[r.get("finished_at") or r["created_at"] for r in rs],
                        y=[r["total_tflops"] for r in rs], name=device,
                        mode="lines+markers", text=[r.get("name") or r["run_id"] for r in rs])
    return fig


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class RunsView(Viewer):
    """Table + organise + compare + SQL + TFLOPS history."""

    state = param.ClassSelector(class_=AppState)
    query = param.String(default="", doc="runs filter, e.g. val_accuracy > 0.9 and tag:a")
    query_error = param.String(default="")
    state_filter = param.ListSelector(default=[], objects=list(RUN_STATES))
    model_filter = param.String(default="", doc="the model's name or id (part of it)")
    dataset_filter = param.Selector(default="", objects=["", "mnist", "fashion-mnist"])
    experiment_filter = param.Selector(default="", objects=[""], check_on_set=False,
                                       doc="only this experiment ('': all)")
    columns = param.ListSelector(default=list(_COLUMNS), objects=list(COLUMNS))
    selected = param.List(default=[], doc="run ids ticked in the table (compared)")
    total = param.Integer(default=0, doc="runs matching the filters (the table shows at most "
                                         "MAX_RUNS)")
    edit_name = param.String(default="")
    edit_experiment = param.String(default="")
    edit_tags = param.String(default="", doc="comma-separated")
    edit_notes = param.String(default="")
    edit_error = param.String(default="")
    show_history = param.Boolean(default=False, doc="draw the achieved-TFLOPS history (every "
                                 "run shown; on request, so opening the tab does not wait)")
    sql = param.String(default=DEFAULT_SQL)
    sql_error = param.String(default="")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self._table = pn.widgets.Tabulator(
            pd.DataFrame(columns=list(self.columns)), selectable="checkbox",
            pagination="remote", page_size=12, sizing_mode="stretch_width", show_index=False,
            disabled=True, header_filters=False, css_classes=["runs-table"], height=420,
            formatters=_FORMATTERS, text_align={c: "right" for c in _NUMBERS if c != "best_val_accuracy"},  # bars grow left to right
            widths={c: column_width(c) for c in COLUMNS}, frozen_columns=_FROZEN,
            configuration={"columnDefaults": {"tooltip": True},  # a cut-off value, whole
                           "placeholder": "No runs to show: train one, or widen the filter"},
        )
        self._table.param.watch(self._on_select, "selection")
        self.compare = CompareView(state)
        self._history = pn.pane.Plotly(None, sizing_mode="stretch_width", height=320,
                                       config=CHART_CONFIG, css_classes=["chart-tflops-history"],
                                       visible=False)
        self._sql_result = pn.widgets.Tabulator(
            pd.DataFrame(), sizing_mode="stretch_width", show_index=False, disabled=True,
            pagination="local", page_size=15, css_classes=["sql-result"], height=300)
        self._rows: list[dict[str, Any]] = []
        self._experiments: dict[str, dict[str, Any]] = {}
        self._experiment_note = pn.pane.Markdown("", visible=False, sizing_mode="stretch_width",
                                                 css_classes=["experiment-note"], margin=(0, 10))
        # Panes updated in place (a ParamMethod per message cost a re-render and ~15 ms each).
        self._count = html("")
        self._show_count()
        self.param.watch(lambda _: self._show_count(), "total")
        self._errors = {name: self._error_alert(name, css) for name, css in (
            ("query_error", "filter-error"), ("edit_error", "edit-error"),
            ("sql_error", "sql-error"))}
        self.refresh()  # the SQL box runs on request: DEFAULT_SQL reads every metric point

    # ---- data ------------------------------------------------------------------------------
    def _conditions(self) -> list[str]:
        """The filter widgets' conditions (the Filter box's text is passed on its own)."""
        parts = []
        if self.state_filter:
            parts.append("state in (" + ", ".join(map(_quoted, self.state_filter)) + ")")
        if self.dataset_filter:
            parts.append(f"dataset = {_quoted(self.dataset_filter)}")
        if self.experiment_filter:
            parts.append(f"experiment = {_quoted(self.experiment_filter)}")
        if self.model_filter.strip():
            needle = _quoted(self.model_filter.strip())
            parts.append(f"(model ~ {needle} or model_id ~ {needle})")
        return parts

    @param.depends("query", "state_filter", "dataset_filter", "model_filter",
                   "experiment_filter", "columns", "state.runs_changed", watch=True)
    def refresh(self) -> None:
        self._load_experiments()
        wanted = list(dict.fromkeys(["run_id", *self.columns, *_CHART_COLUMNS]))
        try:
            table = self.state.service.runs_table(columns=wanted, filter=self.query,
                                                  also=self._conditions(), limit=MAX_RUNS)
        except ValueError as exc:  # a filter that is not valid: say where, show nothing old
            self.query_error = str(exc)
            self._rows, self.total = [], 0
            self._table.value = runs_frame([], list(self.columns))
            return
        self.query_error = ""
        self._rows, self.total = table.rows, table.total
        shown = [c for c in ["run_id", *self.columns] if c in wanted]
        keep = list(self.selected)  # a new table value clears the selection: tick them again
        # Frozen: only those shown (Panel counts a frozen name that is absent as a column).
        self._table.param.update(value=runs_frame(self._rows, list(dict.fromkeys(shown))),
                                 frozen_columns=[c for c in _FROZEN if c in shown])
        position = {r["run_id"]: i for i, r in enumerate(self._rows)}
        self._table.selection = [position[r] for r in keep if r in position]
        self.selected = [r for r in keep if r in position]
        self._draw_history()
        self.compare.rows = self._rows

    @param.depends("show_history", watch=True)
    def _draw_history(self) -> None:
        self._history.visible = self.show_history
        self._history.object = tflops_history(self._rows) if self.show_history else None

    def _load_experiments(self) -> None:
        """The Experiment choices (every experiment, newest activity first) and their
        descriptions, shown under the filters for the one chosen."""
        self._experiments = {e["name"]: e for e in self.state.service.experiments()}
        choices = ["", *self._experiments]
        if self.experiment_filter not in choices:  # e.g. typed in a notebook before it exists
            choices.append(self.experiment_filter)
        self.param.experiment_filter.objects = choices
        self._describe_experiment()

    @param.depends("experiment_filter", watch=True)
    def _describe_experiment(self) -> None:
        chosen = self._experiments.get(self.experiment_filter)
        text = ""
        if chosen is not None:
            best = chosen["best"]
            text = (f"**{escape_markdown(chosen['name'])}** · {chosen['runs']} runs"
                    + (f" · best val_accuracy {best['value']:.4f} "
                       f"({escape_markdown(str(best['run_name']))})" if best else "")
                    + (f" — {escape_markdown(chosen['description'])}"
                       if chosen["description"] else ""))
        self._experiment_note.object = text
        self._experiment_note.visible = bool(text)

    def _on_select(self, event: param.parameterized.Event) -> None:
        frame = self._table.value
        self.selected = [frame.iloc[i]["run_id"] for i in event.new if i < len(frame)]

    @param.depends("selected", watch=True)
    def _selection_changed(self) -> None:
        self.compare.run_ids = list(self.selected)
        run = self._selected_run()
        self.edit_error = ""
        if run is not None:
            self.edit_name, self.edit_experiment = run.name, run.experiment
            self.edit_tags, self.edit_notes = ", ".join(run.tags), run.notes

    def _selected_run(self) -> RunRecord | None:
        return self.state.service.get_run(self.selected[-1]) if self.selected else None

    def save_edits(self) -> None:
        """Apply the name / experiment / tags / notes fields to the last selected run."""
        if not self.selected:
            self.edit_error = "tick a run first"
            return
        tags = [t.strip() for t in self.edit_tags.split(",") if t.strip()]
        try:
            self.state.service.update_run(self.selected[-1], name=self.edit_name,
                                          experiment=self.edit_experiment, tags=tags,
                                          notes=self.edit_notes)
        except ValueError as exc:
            self.edit_error = str(exc)
            return
        self.edit_error = ""
        self.refresh()

    def run_sql(self) -> None:
        """Run ``sql`` read-only; the result goes to the table, errors to ``sql_error`` (and
        the previous result is cleared, so it cannot be mistaken for this query's)."""
        try:
            columns, rows = self.state.service.query(self.sql)
        except (PermissionError, ValueError) as exc:
            self.sql_error = str(exc)
            self._sql_result.value = pd.DataFrame()
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

    def _error_alert(self, name: str, css: str) -> pn.pane.Alert:
        """An alert showing the text of the parameter ``name``, hidden while it is empty."""
        alert = pn.pane.Alert("", alert_type="danger", visible=False, css_classes=[css],
                              sizing_mode="stretch_width")

        def show(*_: Any) -> None:
            text = getattr(self, name)
            alert.param.update(object=escape_markdown(text), visible=bool(text))

        show()
        self.param.watch(show, name)
        return alert

    def _show_count(self) -> None:
        shown = min(self.total, MAX_RUNS)
        more = f" (the newest {shown}; filter to narrow)" if self.total > MAX_RUNS else ""
        self._count.object = f"<span class='wb-muted runs-count'>{self.total} runs{more}</span>"

    def __panel__(self) -> pn.viewable.Viewable:
        w = pn.widgets
        refresh = w.Button(label="↻ Refresh", width=100)
        refresh.on_click(lambda _: self.refresh())
        open_live = w.Button(label="Open in live view", width=150, color="primary")
        open_live.on_click(lambda _: self.open_selected())
        search = w.TextInput.from_param(
            self.param.query, name="Filter", sizing_mode="stretch_width",
            placeholder="val_accuracy > 0.9 and optimizer = adam and tag:baseline",
            css_classes=["runs-filter"])
        filters = pn.FlexBox(  # wraps at narrow widths (no sideways scroll)
            w.MultiChoice.from_param(self.param.state_filter, name="State", width=220),
            w.TextInput.from_param(self.param.model_filter, name="Model", width=160,
                                   placeholder="name or id"),
            w.Select.from_param(self.param.experiment_filter, name="Experiment", width=180,
                                css_classes=["experiment-filter"]),
            w.Select.from_param(self.param.dataset_filter, name="Dataset", width=140),
            w.MultiChoice.from_param(self.param.columns, name="Columns", width=440),
            pn.Column(pn.Row(refresh, open_live), margin=(18, 0)),
        )
        # The controls below the table come once the browser shows its first row, or says it has
        # none (see after_paint).
        below = fill_after_paint(self._below, sizing_mode="stretch_width", margin=0,
                                 wait_for=[".runs-table", ".tabulator-row, .tabulator-placeholder"])
        return pn.Column(search, self._errors["query_error"], filters, self._experiment_note,
                         self._count, self._table, below, sizing_mode="stretch_width")

    def _below(self) -> list[Any]:
        """Edit the selected run, compare, the TFLOPS history and the SQL box."""
        w = pn.widgets
        save = w.Button(label="Save", width=80, color="primary", css_classes=["save-run"])
        save.on_click(lambda _: self.save_edits())
        run = w.Button(label="Run query", color="primary", css_classes=["run-sql"],
                       width=120)
        run.on_click(lambda _: self.run_sql())
        edit = pn.FlexBox(
            w.TextInput.from_param(self.param.edit_name, name="Name", width=180,
                                   css_classes=["edit-name"]),
            w.TextInput.from_param(self.param.edit_experiment, name="Experiment", width=160),
            w.TextInput.from_param(self.param.edit_tags, name="Tags", width=180,
                                   placeholder="a, b"),
            w.TextInput.from_param(self.param.edit_notes, name="Notes", width=300),
            pn.Column(save, margin=(18, 0)),
        )
        sql_box = w.TextAreaInput.from_param(
            self.param.sql, name="Read-only SQL (DuckDB)", height=110,
            sizing_mode="stretch_width", css_classes=["sql-input"])
        return [
            html("<h3 class='wb-h'>Selected run</h3>"), edit, self._errors["edit_error"],
            html("<h3 class='wb-h'>Compare the selected runs</h3>"), self.compare,
            w.Checkbox.from_param(self.param.show_history,
                                  name="Show the achieved-TFLOPS history of the runs shown",
                                  css_classes=["show-history"]),
            self._history,
            html("<h3 class='wb-h'>Ad-hoc SQL</h3>"),
            sql_box, run, self._errors["sql_error"], self._sql_result,
        ]
