"""Plotly figures of compared runs, shared by the app's Runs tab and the static report:
curves of a metric (smoothing, log axes, legends by run name), parallel coordinates of
hyperparameters against a metric, and a scatter of any two runs-table columns.

Inputs are plain data (``compare.metric_series`` output, runs-table rows), so each face builds
the same chart from what it already has. Every figure's camera button downloads it (PNG, or
SVG when the app's "Chart download" says so); the report has PNG and SVG buttons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

# TensorBoard's default smoothing weight.
SMOOTHING = 0.6
# The modebar of every chart: PNG download at twice the screen size, no plotly logo.
CHART_CONFIG: dict[str, Any] = {"displaylogo": False,
                "toImageButtonOptions": {"format": "png", "scale": 2}}


def smoothed(values: Sequence[float | None], weight: float = SMOOTHING) -> list[float | None]:
    """Exponential moving average (TensorBoard-style, debiased); gaps stay gaps."""
    out: list[float | None] = []
    last, norm = 0.0, 0.0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def _layout(title: str, height: int, **axes: Any) -> dict[str, Any]:
    return dict(title=dict(text=title, x=0.02, font=dict(size=14)), template="plotly_white",
                height=height, margin=dict(l=55, r=20, t=40, b=40),
                legend=dict(orientation="h", y=-0.22), **axes)


def grouped(series: Mapping[str, Mapping[str, Mapping[str, list[Any]]]], metric: str,
            groups: Mapping[str, str]) -> dict[str, dict[str, dict[str, list[Any]]]]:
    """Aim's grouping: the runs of each group (``groups``: run id -> label) as one curve, the
    mean at each x over the runs that have a point there; labelled ``label (n runs)``."""
    members: dict[str, list[str]] = {}
    for run_id in series:
        members.setdefault(groups.get(run_id, "?"), []).append(run_id)
    out: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for label, run_ids in members.items():
        at: dict[Any, list[float]] = {}
        for run_id in run_ids:
            points = series[run_id].get(metric) or {"x": [], "y": []}
            for xv, yv in zip(points["x"], points["y"]):
                if yv is not None and not (isinstance(yv, float) and math.isnan(yv)):
                    at.setdefault(xv, []).append(yv)
        xs = sorted(at)
        out[f"{label} ({len(run_ids)} runs)"] = {
            metric: {"x": xs, "y": [sum(at[v]) / len(at[v]) for v in xs]}}
    return out


def metric_figure(series: Mapping[str, Mapping[str, Mapping[str, list[Any]]]], metric: str,
                  names: Mapping[str, str], *, x: str = "epoch", smoothing: float = 0.0,
                  log_x: bool = False, log_y: bool = False, height: int = 320,
                  groups: Mapping[str, str] | None = None) -> go.Figure:
    """One metric of several runs, one line per run named by the run's name (or, with
    ``groups``, one mean line per group: see :func:`grouped`)."""
    fig = go.Figure(layout=_layout(
        metric, height, xaxis=dict(title=x, type="log" if log_x else "linear"),
        yaxis=dict(title=metric, type="log" if log_y else "linear")))
    if groups is not None:
        series, names = grouped(series, metric, groups), {}
    for run_id, per_metric in series.items():
        points = per_metric.get(metric) or {"x": [], "y": []}
        y = smoothed(points["y"], smoothing) if smoothing > 0 else list(points["y"])
        fig.add_scatter(x=list(points["x"]), y=y, name=names.get(run_id, run_id),
                        mode="lines+markers" if len(y) < 60 else "lines",
                        # the name from the trace, never parsed as a template
                        hovertemplate=f"%{{fullData.name}}<br>{x} %{{x}}<br>"
                                      f"{metric} %{{y:.4g}}<extra></extra>")
    return fig


def _numeric(values: Sequence[Any]) -> bool:
    return all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for v in values)


def parallel_figure(rows: Sequence[Mapping[str, Any]], params: Sequence[str], metric: str,
                    *, height: int = 360) -> go.Figure:
    """Parallel coordinates: one axis per parameter (text ones as categories) and the metric
    last, lines coloured by the metric."""
    dimensions = []
    for column in [*params, metric]:
        values = [r.get(column) for r in rows]
        if _numeric(values):
            dimensions.append(dict(label=column, values=[
                float("nan") if v is None else v for v in values]))
        else:
            labels = sorted({str(v) for v in values})
            dimensions.append(dict(label=column, values=[labels.index(str(v)) for v in values],
                                   tickvals=list(range(len(labels))), ticktext=labels))
    colour = [r.get(metric) for r in rows]
    line: dict[str, Any] = {}
    if colour and _numeric(colour) and any(c is not None for c in colour):
        line = dict(color=[float("nan") if c is None else c for c in colour],
                    colorscale="Viridis", showscale=True, colorbar=dict(title=metric))
    fig = go.Figure(go.Parcoords(dimensions=dimensions, line=line),
                    layout=_layout(f"{', '.join(params)} against {metric}", height))
    fig.update_layout(margin=dict(l=70, r=70, t=70, b=30))
    return fig


def scatter_figure(rows: Sequence[Mapping[str, Any]], x: str, y: str, *,
                   log_x: bool = False, log_y: bool = False, height: int = 340) -> go.Figure:
    """Any two runs-table columns against each other, one point per run (hover: its name)."""
    fig = go.Figure(layout=_layout(
        f"{y} against {x}", height, xaxis=dict(title=x, type="log" if log_x else "linear"),
        yaxis=dict(title=y, type="log" if log_y else "linear")))
    fig.add_scatter(x=[r.get(x) for r in rows], y=[r.get(y) for r in rows], mode="markers",
                    text=[str(r.get("name") or r.get("run_id")) for r in rows],
                    hovertemplate="%{text}<br>" + f"{x} %{{x}}<br>{y} %{{y}}<extra></extra>",
                    marker=dict(size=9))
    return fig
