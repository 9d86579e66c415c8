"""Comparing runs without a server: the settings diff, the series, the figures, the report."""

from __future__ import annotations

import pytest

from tests.utils.factories import mlp
from workbench import events as ev
from workbench.service.charts import (
    grouped,
    metric_figure,
    parallel_figure,
    scatter_figure,
    smoothed,
)
from workbench.service.compare import architecture_summary, diff_rows, flatten, metric_series
from workbench.service.report import build_report
from workbench.store import Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "wb.duckdb") as s:
        yield s


def _run(store, model, lr, name):
    run = store.create_run(model_id=model.model_id, epochs_total=2, name=name,
                           hyperparams={"optimizer": {"type": "adam", "lr": lr}, "epochs": 2})
    store.apply_event(ev.make_event(ev.RUN_STARTED, run.run_id, epochs_total=2))
    for epoch, loss in ((1, 1.0), (2, 0.5 * lr * 100)):
        store.apply_event(ev.make_event(ev.EPOCH, run.run_id, epoch=epoch, step=epoch * 10,
                                        val_loss=loss))
    store.apply_event(ev.make_event(ev.RUN_COMPLETED, run.run_id))
    return store.get_run(run.run_id)


def test_flatten_and_architecture_summary():
    assert flatten({"optimizer": {"lr": 1, "betas": [0.9, 0.99]}, "epochs": 3}) == {
        "optimizer.lr": 1, "optimizer.betas": [0.9, 0.99], "epochs": 3}
    assert architecture_summary(mlp(128)) == "784-128-10" and architecture_summary(None) is None


def test_diff_marks_what_differs_including_layers(store):
    small = store.create_model(architecture=mlp(16), hyperparams={})
    wide = store.create_model(architecture=mlp(64), hyperparams={})
    a, b = _run(store, small, 0.01, "a"), _run(store, wide, 0.01, "b")
    rows = {r["key"]: r for r in diff_rows([a, b], {small.model_id: small.architecture,
                                                    wide.model_id: wide.architecture})}
    assert rows["architecture"] == {"key": "architecture", "values": ["784-16-10", "784-64-10"],
                                    "differs": True}
    assert rows["layers[0]"]["differs"] and not rows["layers[1]"]["differs"]
    assert not rows["hp.optimizer.lr"]["differs"] and rows["name"]["values"] == ["a", "b"]


def test_series_by_epoch_step_and_time(store):
    model = store.create_model(architecture=mlp(16), hyperparams={})
    run = _run(store, model, 0.01, "a")
    by_epoch = metric_series(store, [run], ["val_loss"])[run.run_id]["val_loss"]
    assert by_epoch == {"x": [1, 2], "y": [1.0, 0.5]}
    assert metric_series(store, [run], ["val_loss"], x="step")[run.run_id]["val_loss"]["x"] == [
        10, 20]
    seconds = metric_series(store, [run], ["val_loss"], x="time")[run.run_id]["val_loss"]["x"]
    assert seconds == sorted(seconds) and seconds[0] >= 0
    with pytest.raises(ValueError, match="x: one of epoch, step, time"):
        metric_series(store, [run], ["val_loss"], x="wall")


def test_smoothing_keeps_gaps_and_first_value():
    assert smoothed([1.0, None, 3.0], 0.5)[:2] == [1.0, None]
    assert smoothed([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])


def test_figures_name_runs_and_take_log_axes():
    series = {"r_1": {"loss": {"x": [1, 2], "y": [1.0, 0.5]}}, "r_2": {"loss": {"x": [1],
                                                                               "y": [2.0]}}}
    fig = metric_figure(series, "loss", {"r_1": "brave-otter-07"}, log_y=True)
    assert [t.name for t in fig.data] == ["brave-otter-07", "r_2"]
    assert fig.layout.yaxis.type == "log"
    rows = [{"name": "a", "optimizer": "adam", "lr": 0.1, "acc": 0.9},
            {"name": "b", "optimizer": "sgd", "lr": 0.01, "acc": None}]
    parallel = parallel_figure(rows, ["optimizer", "lr"], "acc")
    (optimizer, lr, acc) = parallel.data[0].dimensions
    assert list(optimizer.ticktext) == ["adam", "sgd"] and list(lr.values) == [0.1, 0.01]
    scatter = scatter_figure(rows, "lr", "acc", log_x=True)
    assert list(scatter.data[0].text) == ["a", "b"] and scatter.layout.xaxis.type == "log"


def test_report_escapes_names_and_inlines_plotly():
    series = {"r_1": {"loss": {"x": [1], "y": [1.0]}}}
    page = build_report("<b>t</b>", [{"run_id": "r_1", "name": "<script>x</script>"}],
                        [{"key": "hp.lr", "values": [0.1], "differs": False}], series, ["loss"],
                        {"r_1": "<script>x</script>"})
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;t&lt;/b&gt;" in page and "Plotly" in page and "<script src" not in page


def test_grouping_averages_runs_per_value():
    series = {"a": {"loss": {"x": [1, 2], "y": [1.0, 0.5]}},
              "b": {"loss": {"x": [1, 2], "y": [3.0, None]}},
              "c": {"loss": {"x": [1], "y": [7.0]}}}
    groups = {"a": "optimizer=adam", "b": "optimizer=adam", "c": "optimizer=sgd"}
    assert grouped(series, "loss", groups) == {
        "optimizer=adam (2 runs)": {"loss": {"x": [1, 2], "y": [2.0, 0.5]}},
        "optimizer=sgd (1 runs)": {"loss": {"x": [1], "y": [7.0]}}}
    fig = metric_figure(series, "loss", {}, groups=groups)
    assert [t.name for t in fig.data] == ["optimizer=adam (2 runs)", "optimizer=sgd (1 runs)"]
