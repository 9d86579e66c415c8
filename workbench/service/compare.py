"""Compare runs: a diff table of their settings and the curves of several metrics.

    diff = diff_rows(runs, architectures)     # [{"key", "values": [...], "differs"}]
    series = metric_series(store, run_ids, ["val_loss", "val_accuracy"], x="epoch")

The diff flattens each run's hyperparameters (``optimizer.lr``), its organisation (experiment,
tags), where it ran, and its architecture (a ``784-128-10`` summary and one row per layer), so
MLflow's compare view can be drawn by any face; ``differs`` marks the rows to highlight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..store import RunRecord, Store

X_AXES = ("epoch", "step", "time")
DEFAULT_METRICS = ("val_loss", "val_accuracy", "train_loss")
MAX_COMPARE_RUNS = 50


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": 1}}`` -> ``{"optimizer.lr": 1}``; lists stay values."""
    if not isinstance(value, Mapping):
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, name))
        else:
            out[name] = item
    return out


def architecture_summary(architecture: Mapping[str, Any] | None) -> str | None:
    """``784-128-64-10``: the input size, then each linear layer's width."""
    if not architecture:
        return None
    widths = [str(layer["out"]) for layer in architecture.get("layers", [])
              if isinstance(layer, Mapping) and layer.get("out") is not None]
    return "-".join([str(architecture.get("input_size", "?")), *widths])


def _layer_text(layer: Mapping[str, Any]) -> str:
    details = ", ".join(f"{k}={v}" for k, v in layer.items() if k != "type")
    return f"{layer.get('type')}({details})" if details else str(layer.get("type"))


def settings(run: RunRecord, architecture: Mapping[str, Any] | None) -> dict[str, Any]:
    """Everything that describes how a run was made, flat, in display order."""
    hp = dict(run.hyperparams or {})
    if run.target == "external":  # a tracked run: its config holds the hyperparameters
        hp = dict(hp.get("config") or {})
    row: dict[str, Any] = {
        "name": run.name, "experiment": run.experiment, "tags": ", ".join(run.tags),
        "model": run.model_id, "dataset": run.dataset, "target": run.target,
        "device": run.device, "state": run.state,
        "architecture": architecture_summary(architecture),
    }
    row.update({f"hp.{k}": v for k, v in flatten(hp).items()})
    for i, layer in enumerate((architecture or {}).get("layers", [])):
        if isinstance(layer, Mapping):
            row[f"layers[{i}]"] = _layer_text(layer)
    return row


def diff_rows(runs: Sequence[RunRecord],
              architectures: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per setting: the value of each run (None where a run lacks it) and whether
    they differ; the keys in first-seen order."""
    per_run = [settings(r, architectures.get(r.model_id)) for r in runs]
    keys = list(dict.fromkeys(k for row in per_run for k in row))
    rows = []
    for key in keys:
        values = [row.get(key) for row in per_run]
        shown = [_hashable(v) for v in values]
        rows.append({"key": key, "values": values, "differs": len(set(shown)) > 1})
    return rows


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (list, dict, tuple)) else value


def metric_series(store: Store, runs: Sequence[RunRecord], metrics: Sequence[str], *,
                  x: str = "epoch") -> dict[str, dict[str, dict[str, list[Any]]]]:
    """``{run_id: {metric: {"x": [...], "y": [...]}}}``; x is the epoch, the step (the epoch
    where a point has none) or seconds since the run started."""
    if x not in X_AXES:
        raise ValueError(f"x: one of {', '.join(X_AXES)}, got {x!r}")
    out: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for run in runs:
        per_metric: dict[str, dict[str, list[Any]]] = {m: {"x": [], "y": []} for m in metrics}
        points = store.get_metrics(run.run_id, names=list(metrics))
        start = run.started_at or run.created_at
        for p in sorted(points, key=lambda p: (p.time, p.epoch, p.step or 0)) \
                if x == "time" else points:
            if x == "epoch":
                at: Any = p.epoch
            elif x == "step":
                at = p.step if p.step is not None else p.epoch
            else:
                at = round((p.time - start).total_seconds(), 3)
            series = per_metric[p.name]
            series["x"].append(at)
            series["y"].append(p.value)
        out[run.run_id] = per_metric
    return out
