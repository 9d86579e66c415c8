"""The Panel views driven through their parameters, against a real service and DuckDB store
(no browser): builder validation and costs, launching, live updates from the event bus, the
runs table and SQL box, the playground, and the server's websocket Origin check."""

from __future__ import annotations

import base64
import io
import json
import re
import time

import numpy as np
import panel as pn
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from workbench.model import model_cost
from workbench.spec import error_messages, validate_architecture
from workbench.store.runs_table import COLUMNS
from workbench.ui.app import header_device
from workbench.ui.builder import Builder
from workbench.ui.launch import LaunchPanel
from workbench.ui.live import LiveRun, smoothed
from workbench.ui.mnistify import mnistify
from workbench.ui.playground import Playground
from workbench.ui.runs import RunsView
from workbench.ui.server import origin_allowed
from workbench.ui.state import AppState
from workbench.ui.theme import escape_markdown


@pytest.fixture(scope="module")
def service(offline_service):
    return offline_service


@pytest.fixture(scope="module")
def trained(service):
    """One small finished run, launched through the launch panel and watched by a LiveRun."""
    state = AppState(service=service, device="cpu")
    builder = Builder(state)
    builder.preset = "784-64-10"
    launch = LaunchPanel(state, epochs=2, limit=600, batch_size=100)
    live = LiveRun(state)
    run_id = launch.launch()
    assert run_id, launch.message
    service.wait_run(run_id, timeout=120)
    deadline = time.monotonic() + 10
    while live.run_state != "succeeded" and time.monotonic() < deadline:
        live.poll()
        time.sleep(0.05)
    live.poll()
    return state, live, service.get_run(run_id)


def _spec_message(data):
    with pytest.raises(ValidationError) as info:
        validate_architecture(data)
    return error_messages(info.value)[0]


def test_builder_builds_784_64_10_by_edits(service):
    b = Builder(AppState(service=service))
    b.clear()
    b.add_layer("linear")
    b.set_size(0, "out", 64)
    b.add_layer("relu")
    b.add_layer("linear")
    assert b.to_json() == {"input_size": 784, "layers": [
        {"type": "linear", "in": 784, "out": 64}, {"type": "relu"},
        {"type": "linear", "in": 64, "out": 10}]}
    assert b.errors == [] and b.state.architecture == b.to_json()
    costs = model_cost(validate_architecture(b.to_json()))
    assert f"{costs.params:,}" in b._summary.object
    assert "predicted epoch time" in b._summary.object
    # the unit depends on the measured peak (a busy machine measures less)
    assert re.search(r"\d (µs|ms|s|min)<small>", b._summary.object), b._summary.object


def test_prediction_counts_the_samples_a_run_would_read(service):
    """Offline, MNIST is the bundled subset: 4,000 images, 3,600 after the 0.9 split."""
    state = AppState(service=service)
    b, launch = Builder(state), LaunchPanel(state)
    assert (state.train_samples, state.samples_source) == (3600, "bundled-subset")
    assert "3.6k samples (the bundled subset)" in b._summary.object, b._summary.object
    launch.limit = 1000
    assert state.train_samples == 1000 and "1k samples" in b._summary.object


def test_builder_dimension_mismatch_shows_the_api_message_on_the_layer(service):
    b = Builder(AppState(service=service))
    b.load_json({"layer_sizes": [784, 64, 10]})
    b._rows[2].in_.value = 32  # the widget edit a user makes
    expected = _spec_message(b.to_json())
    assert b.errors == [expected]
    assert b.layer_errors == {2: expected}
    assert "wb-layer-error" in b._rows[2]._layout.css_classes
    assert expected in b._rows[2].error.object and b._rows[2].error.visible
    assert b.state.architecture is None
    b._rows[2].in_.value = 64
    assert b.errors == [] and "wb-layer-error" not in b._rows[2]._layout.css_classes
    assert b.state.architecture is not None


def test_builder_out_edit_carries_into_next_linear(service):
    b = Builder(AppState(service=service))
    b.preset = "784-256-128-10"
    b._rows[0].out.value = 300
    assert b.to_json()["layers"][2] == {"type": "linear", "in": 300, "out": 128}
    assert b.errors == []


@pytest.mark.parametrize("mutate, index", [
    (lambda b: b.set_layer_type(1, "softmax"), 1),
    (lambda b: [b.add_layer(t) for t in ["relu", "linear"] * 4], 10),
])
def test_builder_rule_violations_point_at_layer(service, mutate, index):
    b = Builder(AppState(service=service))
    mutate(b)
    assert b.errors == [_spec_message(b.to_json())]
    assert index in b.layer_errors


def test_builder_reorder_remove_import_export(service):
    b = Builder(AppState(service=service))
    b.preset = "784-128-64-10"
    exported = b._json.value
    b.move_layer(1, +1)  # relu below the linear: still valid (relu then... ) -> check types
    assert [x["type"] for x in b.layers][:3] == ["linear", "linear", "relu"]
    b.remove_layer(0)
    assert b.errors  # first linear now takes 128 inputs, not 784
    b._json.value = exported
    b._import(None)
    assert b.errors == [] and len(b.layers) == 5
    b._json.value = "{not json"
    b._import(None)
    assert b._import_error.visible and "Import failed" in b._import_error.object


def test_launch_refuses_invalid_architecture_and_bad_hyperparams(service):
    state = AppState(service=service, device="cpu")
    b = Builder(state)
    b.set_layer_type(1, "softmax")
    launch = LaunchPanel(state)
    assert launch.launch() is None and "Build tab" in launch.message
    b.set_layer_type(1, "relu")
    launch.lr = 10.0
    launch.optimizer = "sgd"
    launch.momentum = 0.99
    launch.epochs = 1
    launch.train_split = 0.05
    assert launch.hyperparams()["optimizer"]["momentum"] == 0.99
    launch.limit = 5
    assert state.train_samples == 5


def test_live_view_follows_the_run_from_the_bus(trained):
    state, live, run = trained
    assert run.state == "succeeded"
    assert live.run_state == "succeeded" and live.epoch == 2 and live.epoch_points == 2
    figs = live.figures()
    names = {t.name: len(t.x) for t in figs["loss"].data}
    assert names["train loss"] == 2 and names["val loss"] == 2
    assert names["step loss (smoothed)"] > 2
    assert {t.name for t in figs["tflops"].data} == {"forward", "backward", "total"}
    assert all(len(t.y) == 2 and min(t.y) > 0 for t in figs["tflops"].data)
    assert live.peak_tflops and live.peak_tflops > 0
    assert live._cancel.disabled
    # the engine's runs carry the training process's system metrics, every epoch
    rss = {t.name: t.y for t in figs["throughput"].data}["process RSS (MiB)"]
    assert len(rss) == 2 and min(rss) > 10, rss
    _, rows = state.service.query("SELECT name, count(*) FROM metrics WHERE run_id = "
                                  f"'{run.run_id}' AND name LIKE 'system/%' GROUP BY name")
    assert dict(rows)["system/rss_bytes"] == 2 and dict(rows)["system/cpu_percent"] == 2


def test_live_view_loads_history_of_a_finished_run(trained, service):
    state, _, run = trained
    other = LiveRun(AppState(service=service, run_id=run.run_id))
    assert other.epoch_points == 2 and other.run_state == "succeeded"


def test_failed_run_shows_its_error(service, tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_FASHION_MNIST_DIR", str(tmp_path))  # no files -> fails
    state = AppState(service=service, device="cpu")
    Builder(state)
    state.dataset = "fashion-mnist"
    launch = LaunchPanel(state, epochs=1, limit=100)
    live = LiveRun(state)
    run_id = launch.launch()
    assert run_id, launch.message
    service.wait_run(run_id, timeout=120)
    deadline = time.monotonic() + 10
    while live.run_state != "failed" and time.monotonic() < deadline:
        live.poll()
        time.sleep(0.05)
    assert live.run_state == "failed" and live.error
    assert live.error == service.get_run(run_id).error
    header = live._header()
    assert any("Run failed" in str(getattr(p, "object", "")) for p in header.objects)


def test_live_bar_moves_inside_an_epoch_one_redraw_per_poll(trained, service):
    """Step events (on the real bus) move the bar within the first epoch; a burst of them
    between two polls sets it once, so the page is not flooded."""
    from workbench import events as ev

    _state, _live, finished = trained
    run, _hp = service.create_run(finished.model_id, hyperparams={"epochs": 2, "batch_size": 100})
    live = LiveRun(AppState(service=service, device="cpu"))
    live.state.run_id = run.run_id
    changes = []
    live.param.watch(lambda e: changes.append(e.new), "progress")
    service.bus.publish(ev.make_event(ev.RUN_STARTED, run.run_id, epochs_total=2, n_train=1000,
                                      batch_size=100, device="cpu"))
    for step in range(1, 6):  # half of epoch 1 (10 steps per epoch)
        service.bus.publish(ev.make_event(ev.STEP, run.run_id, epoch=1, step=step, loss=2.0))
    live.poll()
    assert live.epoch == 0 and live.progress == pytest.approx(0.25) and changes == [0.25]
    assert "25%" in live._header().objects[0].object
    for step in range(6, 16):  # a burst: the rest of epoch 1 and half of epoch 2
        service.bus.publish(ev.make_event(ev.STEP, run.run_id, epoch=1 + step // 11, step=step,
                                          loss=1.0))
    live.poll()
    assert live.progress == pytest.approx(0.75) and changes == [0.25, 0.75]
    assert not live.poll() and changes == [0.25, 0.75]  # nothing new: no redraw
    live.close()
    assert _live.progress == 1.0  # the finished run's bar is full


def test_runs_view_table_filters_compare_and_sql(trained, service):
    state, _, run = trained
    other = service.create_external_run(name="tracked-other", experiment="side",
                                        config={"lr": 0.5, "optimizer": "sgd"}, tags=["x"])
    service.log_metrics(other.run_id, {"key": ["val_loss", "val_loss"], "value": [2.0, 1.0],
                                       "step": [0, 1], "epoch": [1, 2]})
    service.finish_external_run(other.run_id)
    view = RunsView(state)
    # Not served: the part below the table is there at once; every column has a fixed width
    # (Tabulator does not measure the cells; see runs.column_width).
    assert view._sql_result in view.__panel__().objects[-1].objects
    assert set(COLUMNS) <= set(view._table.widths)
    table = view._table.value
    assert table.iloc[0]["run_id"] == other.run_id  # newest first
    assert list(table["created_at"]) == sorted(table["created_at"], reverse=True)
    assert "architecture" not in table  # not a default column: shown when chosen
    view.columns = [*view.columns, "architecture"]
    table = view._table.value
    mine = table[table["run_id"] == run.run_id].iloc[0]
    assert mine["name"] == run.name and mine["architecture"] == "784-64-10"
    view.state_filter = ["failed"]
    assert run.run_id not in set(view._table.value["run_id"])
    view.state_filter = []
    view.model_filter = "no-such-model"
    assert view._table.value.empty
    view.model_filter = ""
    view.query = "tag:x"
    assert list(view._table.value["run_id"]) == [other.run_id] and view.total == 1
    view.query = "val_accuracy >"
    assert "position 14" in view.query_error and view._table.value.empty
    view.query = ""
    assert view.query_error == "" and view.total >= 2
    view.columns = ["name", "lr"]
    assert list(view._table.value.columns) == ["run_id", "name", "lr"]
    assert view._table.frozen_columns == ["run_id", "name"]
    view.columns = ["lr"]
    assert view._table.frozen_columns == ["run_id"]  # only shown columns are frozen
    view.columns = ["name", "lr"]

    compare = view.compare
    # Nothing ticked: no parallel coordinates or scatter drawn (opening the tab stays quick).
    assert not compare._parallel.visible and not compare._scatter.visible
    assert not view._history.visible and view._sql_result.value.empty
    rows = list(view._table.value["run_id"])
    view._table.selection = [rows.index(run.run_id), rows.index(other.run_id)]
    assert view.selected == [run.run_id, other.run_id]
    compare.metrics = ["val_loss"]
    (chart,) = compare._charts.objects
    names = [t.name for t in chart.object.data]
    assert names == [run.name, "tracked-other"]  # legends by run name, not ids
    raw = list(chart.object.data[1].y)
    compare.smoothing = 0.5
    assert list(compare._charts.objects[0].object.data[1].y) != raw
    compare.log_y = True
    assert compare._charts.objects[0].object.layout.yaxis.type == "log"
    compare.group_by = "experiment"
    assert sorted(t.name for t in compare._charts.objects[0].object.data) == [
        "experiment=default (1 runs)", "experiment=side (1 runs)"]
    compare.group_by = ""
    compare.image_format = "svg"
    assert compare._charts.objects[0].config["toImageButtonOptions"]["format"] == "svg"
    assert compare._scatter.config["toImageButtonOptions"]["format"] == "svg"
    diff = compare.diff_frame().set_index("setting")
    assert diff.loc["experiment", "differs"] and "<tr class='differs'>" in compare._diff.object
    assert compare._parallel.object.data[0].type == "parcoords" and compare._parallel.visible
    assert len(compare._scatter.object.data[0].x) == 2  # the compared runs
    before = view.total
    service.create_external_run(name="third", config={"lr": 0.2})
    view.refresh()
    assert view.total == before + 1 and len(compare._scatter.object.data[0].x) == 2
    compare.plot_shown = True  # on request: every run in the table
    assert len(compare._scatter.object.data[0].x) == view.total
    assert len(compare._parallel.object.data[0].dimensions[0].values) == view.total
    assert "<html>" in compare.report_html() and "tracked-other" in compare.report_html()

    view.edit_name, view.edit_tags = "renamed-other", "x, y"
    view.save_edits()
    assert view.edit_error == "" and service.get_run(other.run_id).tags == ("x", "y")
    view.edit_tags = "x, two words"  # a tag may have spaces; commas separate them
    view.save_edits()
    assert view.edit_error == "" and service.get_run(other.run_id).tags == ("x", "two words")
    view.query = 'tag:"two words"'
    assert list(view._table.value["run_id"]) == [other.run_id]
    view.query = ""

    view.show_history = True
    assert view._history.visible and any(len(t.y) for t in view._history.object.data)
    view.sql = "SELECT run_id, state FROM runs WHERE state = 'succeeded'"
    view.run_sql()
    assert view.sql_error == "" and run.run_id in set(view._sql_result.value["run_id"])
    view.sql = "DELETE FROM runs"
    view.run_sql()
    assert "read-only" in view.sql_error and view._sql_result.value.empty  # old result gone
    view.open_selected()
    assert state.run_id == other.run_id


def _drawn_one() -> str:
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(140, 40), (140, 240)], fill=(255, 255, 255, 255), width=20)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_playground_predicts_drawings_uploads_samples(trained, service):
    state, _, run = trained
    pg = Playground(state)
    assert pg.param_id == run.param_id
    label = pg.predict_sample(3)
    assert label in range(10) and len(pg.probabilities) == 10
    assert abs(sum(pg.probabilities) - 1) < 1e-4 and pg.latency_ms > 0
    pg.canvas.value = _drawn_one()  # what the canvas sends after a stroke
    assert pg.source == "drawing" and pg.prediction in range(10), pg.message
    buf = io.BytesIO()
    Image.new("L", (64, 64), 255).save(buf, format="PNG")  # blank white paper
    pg._upload.value = buf.getvalue()
    assert pg.source == "upload" and pg.prediction in range(10)
    m = pg.confusion_matrix()
    assert m.shape == (10, 10) and m.sum() == 1000  # the bundled test split
    assert "accuracy" in pg._confusion.object.layout.title.text


def test_mnistify_fits_20px_box_and_centres_mass():
    canvas = np.zeros((280, 280), np.float32)
    canvas[20:100, 200:230] = 1.0  # a small off-centre stroke
    out = mnistify(canvas)
    ys, xs = np.nonzero(out > 0.1)
    assert ys.max() - ys.min() + 1 <= 21 and xs.max() - xs.min() + 1 <= 21
    cy = (out.sum(1) * np.arange(28)).sum() / out.sum()
    cx = (out.sum(0) * np.arange(28)).sum() / out.sum()
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1


def test_smoothed_is_debiased_ema():
    assert smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_origin_check():
    assert origin_allowed(None, "127.0.0.1:8000")
    assert origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not origin_allowed("http://evil.example", "127.0.0.1:8000")
    assert origin_allowed("http://lab.example", "127.0.0.1:8000", frozenset({"lab.example"}))


def _mounted(service):
    """The app mounted on a bare FastAPI app with the REST API's key ring (key ``KEY``)."""
    from fastapi import FastAPI

    from workbench.auth import KeyRing, bootstrap_admin_key
    from workbench.ui.server import mount

    bootstrap_admin_key(service.store, KEY)
    app = FastAPI()
    app.state.keyring = KeyRing(service.store)
    mount(app, service)
    return app


KEY = "wb_ui-components-key"


def test_mounted_app_serves_page_and_refuses_foreign_websocket(service):
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    with TestClient(_mounted(service)) as client:
        page = client.get("/", headers={"Authorization": f"Bearer {KEY}"})
        assert page.status_code == 200 and "nn-workbench" in page.text
        # plotly.js and Tabulator are not in the page: LibraryLoader fetches them per tab
        assert "plotly" not in page.text and "tabulator" not in page.text.lower()
        with pytest.raises(WebSocketDisconnect) as info:
            with client.websocket_connect("/ws", headers={"origin": "http://evil.example",
                                                          "Authorization": f"Bearer {KEY}"}):
                pass
        assert info.value.code == 1008


def test_app_login(service):
    """No key: the login form with 401 and the websocket refused; a bad key refused; a good
    one in the URL sets an HttpOnly, SameSite=Strict cookie and redirects to the clean URL."""
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from workbench.ui.login import cookie_name

    with TestClient(_mounted(service)) as client:
        anonymous = client.get("/")
        assert anonymous.status_code == 401 and "<form" in anonymous.text
        assert "bk-root" not in anonymous.text and "bokeh" not in anonymous.text
        with pytest.raises(WebSocketDisconnect) as info:
            with client.websocket_connect("/ws"):
                pass
        assert info.value.code == 1008
        for bad in ("/?token=wrong", "/?token="):
            refused = client.get(bad)
            assert refused.status_code == 401 and "not valid" in refused.text
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/login", data={"token": "wrong"}).status_code == 401
        assert not client.cookies

        login = client.get(f"/?token={KEY}&tab=runs", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "./?tab=runs"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert cookie.startswith(cookie_name("testserver") + "=")
        page = client.get("/")  # the cookie now
        assert page.status_code == 200 and "nn-workbench" in page.text
        client.cookies.clear()
        form = client.post("/login", data={"token": KEY}, follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"] == "./"


def test_panel_routes_are_not_api_and_take_odd_queries(service):
    """Schemathesis found ``GET /?bokeh_session_id=...`` answering 500."""
    from fastapi.testclient import TestClient

    app = _mounted(service)
    assert not [p for p in app.openapi()["paths"] if not p.startswith("/api")]
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for query in ("bokeh_session_id=x", "bokeh_session_id=%00%ff", "bokeh_session_id=",
                      "a=%ff&a=1&b", "token_x=1"):
            assert client.get(f"/?{query}").status_code == 200, query


def test_cookie_name_carries_the_port():
    from workbench.ui.login import cookie_name

    assert cookie_name("127.0.0.1:8765") == "workbench_key_8765"
    assert cookie_name("[::1]:9000") == "workbench_key_9000"
    assert cookie_name("example.org") == cookie_name(None) == "workbench_key"


def test_devices_view_shows_stages_and_tflops_history(service):
    """A job's allocation (as ``/network/initialize`` stores it) and ``/api/previous_teraflops``
    data, read through TrainerJobs."""
    from workbench.distributed.allocation import allocate
    from workbench.spec import Architecture
    from workbench.store.jobs import TrainerJobs
    from workbench.ui.devices_view import DevicesView

    jobs = TrainerJobs(service.store)
    job = jobs.create_job(model_config={"layer_sizes": [784, 256, 128, 10]},
                          dataset_config={"name": "mnist"})
    d1 = jobs.register_device(job_id=job.job_id, ip="127.0.0.1", port=5101)
    d2 = jobs.register_device(job_id=job.job_id, ip="127.0.0.1", port=5102)
    arch = Architecture.from_layer_sizes([784, 256, 128, 10])
    allocation = [{**plan.to_json(), "device_id": (d1, d2)[plan.device].device_id,
                   "ip": "127.0.0.1", "port": (d1, d2)[plan.device].port, "score": 1.0,
                   "layer_sizes": [784, 256] if plan.stage == 0 else [256, 128, 10]}
                  for plan in allocate(arch, [1.0, 1.0])]
    jobs.update_job(job_id=job.job_id, status="initialized", allocation=allocation)
    for fwd in (0.01, 0.02):
        jobs.record_session(job_id=job.job_id, devices={
            "1": {"forward_tflops": fwd, "backward_tflops": 2 * fwd, "total_tflops": 3 * fwd},
            "2": {"forward_tflops": fwd / 2, "backward_tflops": fwd, "total_tflops": 1.5 * fwd}})

    view = DevicesView(AppState(service=service, device="cpu"))
    assert view.job_id == job.job_id
    shares = [bar.x[0] for bar in view._share.object.data]
    assert len(shares) == 2 and sum(shares) == pytest.approx(100)
    assert f"#{d1.device_id}" in view._stages.object and "784→256" in view._stages.object
    traces = {t.name: list(t.y) for t in view._history.object.data}
    assert traces["device 1 forward"] == [0.01, 0.02]
    assert traces["device 2 backward"] == [0.01, 0.02]


def test_tabs_wait_for_their_browser_libraries(service):
    """Served pages come without plotly.js / Tabulator: a tab is built once the browser says
    they are loaded (what LibraryLoader's JS callback echoes back)."""
    import json

    from workbench.ui.app import WorkbenchApp

    app = WorkbenchApp(service, lazy_js=True)
    loader = app._loader
    app.show_tab("Runs")
    assert "runs" not in app.views
    request = json.loads(loader._request.value)
    assert request["libs"] == ["plotly", "tabulator"]
    assert any(u.endswith(".js") and "plotly" in u for u in request["urls"])
    assert all(u.startswith("static/") for u in request["urls"])  # relative: works under a prefix
    app.open_tab("Playground")  # waits for the same request, asks nothing new
    assert json.loads(loader._request.value)["id"] == request["id"]
    loader._done.value = "not json"  # anything else a client sends is ignored
    assert "runs" not in app.views
    loader._done.value = loader._request.value  # the browser's echo
    assert {"runs", "playground"} <= set(app.views)
    app.open_tab("Train")  # plotly is loaded already: built at once
    assert "live" in app.views
    assert WorkbenchApp(service).views == {}  # notebooks load everything up front


def test_libraries_prefetched_after_first_render_build_tabs_at_once(service):
    """After the first render the page loads plotly.js and Tabulator in the background (no
    tab is built for it); a tab opened once they are in opens without waiting for them."""
    import json

    from workbench.ui.app import WorkbenchApp

    app = WorkbenchApp(service, lazy_js=True)
    loader = app._loader
    loader.prefetch(["plotly", "tabulator"])
    request = json.loads(loader._request.value)
    assert request["libs"] == ["plotly", "tabulator"]
    loader._done.value = loader._request.value  # the browser's echo
    assert app.views == {}  # prefetching builds nothing
    app.open_tab("Runs")
    assert "runs" in app.views
    assert json.loads(loader._request.value)["id"] == request["id"]  # nothing asked again


def test_run_errors_are_shown_as_text_never_markup(service):
    """A run's error is user text (a data URL, a worker's message): the Train view shows it
    escaped -- no element, no link -- however it is crafted."""
    state = AppState(service=service)
    live = LiveRun(state)
    hostile = '<img src=x onerror="alert(1)"> [click](http://evil.example/) **bold** <script>x</script>'
    live.run_id, live.run_state, live.error = "r_x", "failed", hostile
    column = live._header()
    (alert,) = [p for p in column.objects if isinstance(p, pn.pane.Alert)]
    rendered = alert.object
    assert "<img" not in rendered and "<script" not in rendered
    assert "&lt;img" in rendered and "&lt;script&gt;" in rendered
    assert "](http" not in rendered  # Markdown link syntax escaped: not a link
    import markdown  # what Panel's Markdown pane renders with

    html_out = markdown.markdown(rendered)
    assert "<img" not in html_out and "<a " not in html_out and "<script" not in html_out


# ---- issue 18: frictions ------------------------------------------------------------------------
def test_empty_charts_have_honest_axes_and_say_what_to_do(service):
    live = LiveRun(AppState(service=service, device="cpu"))
    figs = live.figures()
    for key, fig in figs.items():
        assert list(fig.layout.xaxis.range) == [0, 1], key  # not plotly's -1..6
        (note,) = fig.layout.annotations
        assert note.text == "no run yet"
    assert list(figs["accuracy"].layout.yaxis.range) == [0, 1]
    assert "▶ Launch training" in live._header().object
    assert not live._cancel.visible and live._cancel.disabled  # nothing to cancel


def test_charts_of_a_run_span_its_epochs(trained):
    _state, live, run = trained
    figs = live.figures()
    assert list(figs["accuracy"].layout.yaxis.range) == [0, 1]
    assert not figs["loss"].layout.annotations  # it has points: no "waiting" note
    assert not live._cancel.visible  # finished: nothing to cancel


def test_two_linears_without_activation_are_flagged(service):
    b = Builder(AppState(service=service))
    b.load_json({"input_size": 784, "layers": [{"type": "linear", "in": 784, "out": 64},
                                               {"type": "linear", "in": 64, "out": 10}]})
    assert b.errors == []  # valid ...
    (hint,) = b.hints  # ... but one linear map
    assert "layers[0] and layers[1]" in hint and b._hint.visible
    b.preset = "784-64-10"
    assert b.hints == [] and not b._hint.visible


def test_import_lists_every_problem(service):
    """Every message validation gives is listed (field errors of several layers at once)."""
    b = Builder(AppState(service=service))
    b._json.value = json.dumps({"input_size": 784, "layers": [
        {"type": "linear", "in": 784, "out": 0}, {"type": "relu"},
        {"type": "linear", "in": 64, "out": -3}]})
    b._import(None)
    assert len(b.errors) >= 2, b.errors
    assert b._import_error.visible
    assert f"{len(b.errors)} problem(s)" in b._import_error.object
    for message in b.errors:
        assert escape_markdown(message) in b._import_error.object


def test_import_lists_every_broken_rule_of_the_chain(service):
    """Rule errors (not field errors): each of them, with its layer, in the import's alert."""
    b = Builder(AppState(service=service))
    b._json.value = json.dumps({"input_size": 784, "layers": [
        {"type": "linear", "in": 700, "out": 64}, {"type": "relu"},
        {"type": "linear", "in": 60, "out": 5}]})
    b._import(None)
    assert len(b.errors) == 3, b.errors
    for where in ("layers[0]: linear 'in' is 700", "layers[2]: linear 'in' is 60",
                  "layers[2]: final output is 5"):
        assert escape_markdown(where) in b._import_error.object


def test_opening_a_past_run_sets_the_form_to_its_hyperparameters(trained, service):
    _state, _live, run = trained
    state = AppState(service=service, device="cpu")
    launch = LaunchPanel(state, epochs=5, batch_size=64)
    state.run_id = run.run_id
    assert (launch.epochs, launch.batch_size) == (2, 100)  # the run's, not the defaults
    assert launch.hyperparams()["optimizer"] == run.hyperparams["optimizer"]


def test_header_device_does_not_depend_on_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        labels = set()
        for n in (1, 2):
            torch.set_num_threads(n)
            labels.add(header_device("cpu"))
    finally:
        torch.set_num_threads(before)
    (label,) = labels
    assert "threads" not in label and label.startswith("CPU (")


def test_devices_view_lists_local_devices_and_nodes(service):
    from datetime import datetime, timedelta, timezone

    from workbench import events as ev
    from workbench.ui.devices_view import DevicesView
    from workbench.ui.targets_view import NO_NODES

    view = DevicesView(AppState(service=service, device="cpu"))
    text = view._targets.object
    assert "this machine" in text and "<td>cpu</td>" in text
    assert re.search(r"<td>load \d+\.\d\d/core · mem \d+%</td>", text), text  # psutil, now
    assert "workbench nodes add" in text and "POST /api" not in text  # what to do, no endpoint
    assert NO_NODES in text
    node = service.store.create_node(
        url="http://127.0.0.1:59999", name="box-a", status="busy", current_load=0.5,
        performance_score=1.25, cpu_count=8,
        last_seen=datetime.now(timezone.utc) - timedelta(seconds=30))
    store = service.store
    model = store.create_model(architecture={"layer_sizes": [784, 10]}, hyperparams={})
    run = store.create_run(model_id=model.model_id, hyperparams={}, epochs_total=3,
                           target=node.node_id)
    store.set_run_state(run.run_id, "running", device="cpu")
    # an epoch of the run on that node, with the system metrics its process sampled there
    store.apply_event(ev.make_event(ev.EPOCH, run.run_id, epoch=1, train_loss=0.5, **{
        "system/cpu_percent": 187.0, "system/rss_bytes": 412 * 2**20}))
    try:
        view.refresh()
        text = view._targets.object
        assert "node box-a" in text and "<td>busy</td>" in text and "<td>0.50</td>" in text
        assert "<td>1.25</td>" in text and "s ago" in text and NO_NODES not in text
        assert f"<code>{run.run_id}</code></td><td>CPU 187% · RSS 412 MiB</td>" in text, text
    finally:
        store.set_run_state(run.run_id, "cancelled")
        service.store.delete_node(node.node_id)


def test_live_view_panes_start_with_the_empty_state(service):
    live = LiveRun(AppState(service=service, device="cpu"))
    fig = live._panes["accuracy"].object
    assert list(fig.layout.yaxis.range) == [0, 1] and fig.layout.annotations
