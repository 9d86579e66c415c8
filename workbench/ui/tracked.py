"""Charts of a tracked run (``workbench.track``): whatever its loop logs, by step.

An engine run has fixed metric names per epoch; a tracked run logs any names at any step. Its
points are sorted onto the Train view's four charts by name -- ``…loss…``, ``…acc…``,
``…tflops…`` and ``system/…`` (CPU and memory %; bytes on a MiB axis) -- so the same view
follows both kinds of run live.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import plotly.graph_objects as go

# chart -> does a metric name belong on it (first match wins; the rest are not charted here)
CHART_OF: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("loss", lambda n: "loss" in n.lower()),
    ("accuracy", lambda n: "acc" in n.lower()),
    ("tflops", lambda n: "tflops" in n.lower()),
    ("throughput", lambda n: n.startswith("system/")),
)
TITLES = {"loss": ("Loss", "loss"), "accuracy": ("Accuracy", "accuracy"),
          "tflops": ("Achieved TFLOPS", "TFLOPS"), "throughput": ("System", "%")}


def chart_of(name: str) -> str | None:
    return next((chart for chart, wanted in CHART_OF if wanted(name)), None)


class TrackedSeries:
    """The logged points of one tracked run: ``{name: {step: value}}`` (a point logged without
    a step gets the next index of its name)."""

    def __init__(self) -> None:
        self.points: dict[str, dict[int, float]] = {}

    def add(self, name: str, value: float, step: int | None) -> None:
        series = self.points.setdefault(name, {})
        series[len(series) if step is None else step] = value

    def __len__(self) -> int:
        """Points on the charts (the longest charted series)."""
        return max((len(s) for n, s in self.points.items() if chart_of(n)), default=0)

    def figures(self, layout: Callable[..., dict[str, Any]]) -> dict[str, go.Figure]:
        figs = {chart: go.Figure(layout=layout(*TITLES[chart])) for chart in TITLES}
        for fig in figs.values():
            fig.update_xaxes(title="step")
        for name in sorted(self.points):
            chart = chart_of(name)
            if chart is None:
                continue
            steps = sorted(self.points[name])
            values = [self.points[name][s] for s in steps]
            extra: dict[str, Any] = {}
            if chart == "throughput" and name.endswith("_bytes"):
                values, extra = [v / 2**20 for v in values], {"yaxis": "y2"}
            figs[chart].add_scatter(x=steps, y=values, name=name,
                                    mode="lines+markers" if len(steps) < 60 else "lines",
                                    **extra)
        figs["throughput"].update_layout(
            yaxis2=dict(title="MiB", overlaying="y", side="right", rangemode="tozero"))
        return figs
