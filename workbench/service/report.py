"""A static, self-contained HTML report of selected runs: the runs table, the settings diff
(what differs highlighted) and one chart per metric, with plotly.js inlined -- one file that
opens offline, mailed or attached to an issue. Each chart downloads as PNG or SVG.

    html = build_report(title, rows, diff, series, metrics, names)
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .charts import CHART_CONFIG, metric_figure

# The tables' look (the app's diff uses it too): what differs is highlighted.
TABLE_STYLE = """
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d9e2ec; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f4f8; }
tr.differs td { background: #fff3c4; }
"""
_STYLE = TABLE_STYLE + """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1f2933; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
.chart { margin: 12px 0 20px; } .chart button { margin-right: 6px; }
.meta { color: #627d98; font-size: 12px; }
"""

# Buttons under each chart: Plotly.downloadImage works offline (no server, no kaleido).
_DOWNLOAD_SCRIPT = """
document.querySelectorAll('.chart').forEach(function (box) {
  var plot = box.querySelector('.plotly-graph-div');
  box.querySelectorAll('button[data-format]').forEach(function (button) {
    button.addEventListener('click', function () {
      Plotly.downloadImage(plot, {format: button.dataset.format, filename: box.dataset.name});
    });
  });
});
"""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (list, tuple)):
        return html_lib.escape(", ".join(map(str, value)))
    return html_lib.escape(str(value))


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = (),
           css: str = "") -> str:
    """An HTML table, values escaped; ``classes`` the class of each row."""
    head = "".join(f"<th>{html_lib.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr class='{classes[i] if i < len(classes) else ''}'>"
        + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
        for i, row in enumerate(rows))
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def build_report(title: str, rows: Sequence[Mapping[str, Any]], diff: Sequence[Mapping[str, Any]],
                 series: Mapping[str, Mapping[str, Mapping[str, list[Any]]]],
                 metrics: Sequence[str], names: Mapping[str, str], *, x: str = "epoch",
                 generated_at: datetime | None = None) -> str:
    from plotly.offline import get_plotlyjs

    columns = list(rows[0].keys()) if rows else []
    run_ids = list(series) or [str(r.get("run_id")) for r in rows]
    charts = []
    for i, metric in enumerate(metrics):
        fig = metric_figure(series, metric, names, x=x)
        div = fig.to_html(full_html=False, include_plotlyjs=False, config=CHART_CONFIG,
                          div_id=f"chart-{i}")
        charts.append(
            f"<div class='chart' data-name='{html_lib.escape(metric)}'>{div}"
            "<button data-format='png'>PNG</button><button data-format='svg'>SVG</button></div>")
    stamp = (generated_at or datetime.now()).strftime("%Y-%m-%d %H:%M")
    diff_table = html_table(["setting", *[names.get(r, r) for r in run_ids]],
                        [[d["key"], *d["values"]] for d in diff],
                        ["differs" if d["differs"] else "" for d in diff], css="diff")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html_lib.escape(title)}</title><style>{_STYLE}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
        f"<h1>{html_lib.escape(title)}</h1>"
        f"<p class='meta'>{len(run_ids)} runs · nn-workbench report · {stamp}</p>"
        "<h2>Runs</h2>" + html_table(columns, [[r.get(c) for c in columns] for r in rows],
                                 css="runs")
        + "<h2>Settings (differences highlighted)</h2>" + diff_table
        + "<h2>Metrics</h2>" + "".join(charts)
        + f"<script>{_DOWNLOAD_SCRIPT}</script></body></html>"
    )
