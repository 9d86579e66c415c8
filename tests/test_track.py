"""``workbench.track`` without a server: log-batch parsing, the store's metrics batches, and the
run's queue / spool / retry logic against a fake client (the live tests are in
``tests/test_track_live.py``)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import orjson
import pytest

from workbench import events as ev
from workbench.api.routes.tracking import MAX_POINTS, parse_log_batch
from workbench.store import Store
from workbench.store.events import DuplicateBatch
from workbench.track import spool as spool_mod
from workbench.track import sync
from workbench.track.run import Run


# ---- parsing ---------------------------------------------------------------------------------
def _errors(response) -> list[str]:
    return orjson.loads(response.body)["errors"]


def test_parse_points_and_columns_agree():
    points = [{"key": "loss", "value": 0.5, "step": 1},
              {"key": "acc", "value": 1, "step": 2, "timestamp": 10.5, "epoch": 3}]
    batch_id, cols = parse_log_batch(orjson.dumps({"batch_id": "b", "metrics": points}), now=7.0)
    assert batch_id == "b"
    assert cols == {"key": ["loss", "acc"], "value": [0.5, 1.0], "step": [1, 2],
                    "epoch": [0, 3], "time": [7.0, 10.5]}
    columnar = {"columns": {"key": ["loss", "acc"], "value": [0.5, 1], "step": [1, 2],
                            "timestamp": [None, 10.5], "epoch": [None, 3]}}
    assert parse_log_batch(orjson.dumps(columnar), now=7.0) == (None, cols)


def test_non_finite_values_are_refused_naming_the_index():
    # Python's json writes NaN / Infinity literals: still a 422 that names the point.
    body = json.dumps({"metrics": [{"key": "a", "value": 1.0, "step": 0},
                                   {"key": "a", "value": float("nan"), "step": 1},
                                   {"key": "a", "value": float("inf"), "step": 2}]})
    response = parse_log_batch(body.encode())
    assert response.status_code == 422
    assert _errors(response) == ["metrics[1].value: must be finite (got nan)",
                                 "metrics[2].value: must be finite (got inf)"]
    # orjson (the workbench client) writes NaN as null
    body = orjson.dumps({"columns": {"key": ["a"], "value": [float("nan")], "step": [0]}})
    assert _errors(parse_log_batch(body)) == [
        "columns.value[0]: required, a finite number (got None)"]


@pytest.mark.parametrize("body, error", [
    ({"metrics": []}, "metrics: at least one point"),
    ({"metrics": [{"key": "a", "value": 1, "step": 0}] * (MAX_POINTS + 1)},
     f"metrics: at most {MAX_POINTS} points per request, got {MAX_POINTS + 1}"),
    ({"metrics": [{"key": "", "value": 1, "step": 0}]},
     "metrics[0].key: required, a string of 1..250 characters"),
    ({"metrics": [{"key": "a", "value": True, "step": 0}]},
     "metrics[0].value: required, a finite number (got True)"),
    ({"metrics": [{"key": "a", "value": 1, "step": 1.5}]},
     "metrics[0].step: required, an integer (got 1.5)"),
    ({"metrics": [{"key": "a", "value": 1, "step": 0, "timestamp": 1.7e12}]},
     "metrics[0].timestamp: seconds since the epoch (got 1700000000000.0)"),
    ({"metrics": [{"key": "a", "value": 1, "step": 0, "epoch": -1}]},
     "metrics[0].epoch: a non-negative integer (got -1)"),
    ({"metrics": [{"key": "a", "value": 1, "step": 0, "extra": 1}]},
     "metrics[0].extra: unknown field"),
    ({"metrics": [{"key": "a", "value": 1, "step": 0}], "batch_id": 3},
     "batch_id: a string of 1..200 characters"),
    ({"columns": {"key": ["a", "b"], "value": [1], "step": [0, 1]}},
     "columns: every column needs the same length, got [1, 2]"),
    ({}, "metrics: required"),
])
def test_invalid_batches_are_refused(body, error):
    response = parse_log_batch(orjson.dumps(body))
    assert response.status_code == 422
    assert any(e.startswith(error) for e in _errors(response)), _errors(response)


def test_broken_json_is_400():
    assert parse_log_batch(b"{not json").status_code == 400


# ---- the store -------------------------------------------------------------------------------
def _batch(run_id: str, batch_id: str, n: int, start: int = 0) -> dict:
    return ev.make_event(ev.METRICS, run_id, batch_id=batch_id, count=n,
                         key=["x"] * n, value=[float(i) for i in range(start, start + n)],
                         step=list(range(start, start + n)), epoch=[0] * n,
                         time=[time.time()] * n)


def test_store_applies_a_batch_once_and_keeps_external_runs_across_restarts(tmp_path):
    path = tmp_path / "wb.duckdb"
    with Store(path) as store:
        run = store.create_external_run(hyperparams={"name": "n", "config": {"lr": 0.1}})
        assert (run.state, run.target, run.model_id) == ("running", "external", "external")
        store.apply_event(_batch(run.run_id, "b1", 100))
        with pytest.raises(DuplicateBatch):
            store.apply_event(_batch(run.run_id, "b1", 100))
        store.apply_event(_batch(run.run_id, "b2", 100, start=100))
        assert store.get_run(run.run_id).metrics == {"x": 199.0}  # the latest step's value
    with Store(path) as store:  # a new owner: external runs stay running, batch ids known
        assert store.interrupted_on_open == []
        assert store.get_run(run.run_id).state == "running"
        with pytest.raises(DuplicateBatch):
            store.apply_event(_batch(run.run_id, "b2", 100, start=100))
        rows = store._read("SELECT count(*), count(DISTINCT step) FROM metrics WHERE run_id = ?",
                           [run.run_id])
        assert rows == [(200, 200)]
        logged = [e for e in store.list_events(run.run_id) if e["type"] == ev.METRICS]
        assert [(e["data"]["batch_id"], e["data"]["count"]) for e in logged] == [
            ("b1", 100), ("b2", 100)]


# ---- the run's queue, spool and retries --------------------------------------------------------
class FakeClient:
    """Stores batches by id like the owner; ``down`` makes every call fail to connect,
    ``lose_answers`` stores a batch and then drops the answer (a ReadError)."""

    def __init__(self) -> None:
        self.down = False
        self.lose_answers = 0
        self.batches: dict[str, dict] = {}
        self.order: list[str] = []
        self.finished: str | None = None
        self.lock = threading.Lock()

    def log_batch(self, run_id, metrics=None, *, columns=None, batch_id=None):
        with self.lock:
            if self.down:
                raise httpx.ConnectError("connection refused")
            duplicate = batch_id in self.batches
            if not duplicate:
                self.batches[batch_id] = columns
                self.order.append(batch_id)
            if self.lose_answers:
                self.lose_answers -= 1
                raise httpx.ReadError("connection reset")
            return {"duplicate": duplicate}

    def finish_run(self, run_id, state="succeeded", *, error=None):
        if self.down:
            raise httpx.ConnectError("connection refused")
        self.finished = state
        return {"run_id": run_id, "state": state}

    def tracked_run(self, run_id):
        return {"run_id": run_id, "state": self.finished or "running"}

    def close(self) -> None:
        pass

    def steps(self, key: str = "x") -> list[int]:
        out = []
        for batch_id in self.order:
            cols = self.batches[batch_id]
            out += [s for k, s in zip(cols["key"], cols["step"]) if k == key]
        return out


def test_points_survive_an_outage_in_order_and_once(tmp_path):
    client = FakeClient()
    run = Run(client, {"run_id": "r_test1"}, flush_interval=0.02, system_interval=None,
              home=tmp_path)
    spool_file = spool_mod.Spool.for_run("r_test1", tmp_path).path
    for step in range(300):
        run.log({"x": step, "skip": float("nan")})
        if step == 100:
            assert run.flush(timeout=10)
            client.down = True
        if step == 200:
            deadline = time.monotonic() + 10
            while not spool_file.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert spool_file.exists()  # the outage's batches wait on disk
            client.lose_answers = 2  # back, but the first answers get lost
            client.down = False
        time.sleep(0.001)
    record = run.finish(timeout=30)
    assert record["state"] == "succeeded" and client.finished == "succeeded"
    assert client.steps() == list(range(300))  # every point, in order, none twice
    assert run.spooled_batches > 0 and run.dropped_points == 300
    assert not spool_file.exists()


def test_finish_gives_up_after_timeout_and_sync_sends_the_spool(tmp_path):
    client = FakeClient()
    client.down = True
    run = Run(client, {"run_id": "r_test2"}, flush_interval=0.02, system_interval=None,
              home=tmp_path)
    for step in range(50):
        run.log({"x": step}, epoch=1)
    run.finish(timeout=0.5)
    assert client.finished is None
    [left] = spool_mod.leftover(tmp_path)
    assert left.name == "r_test2.jsonl"
    client.down = False
    assert sync(tmp_path, client=client) == {"files": 1, "batches": 1, "finished": 1}
    assert client.steps() == list(range(50)) and client.finished == "succeeded"
    assert spool_mod.leftover(tmp_path) == []
    assert sync(tmp_path, client=client)["files"] == 0


def test_log_defaults_and_values():
    client = FakeClient()
    run = Run(client, {"run_id": "r_test3"}, flush_interval=10, system_interval=None)
    run.log({"a": 1})                      # step 0
    run.log({"a": 2}, step=10)
    run.log({"a": 3, "nested": {"b": 4}})  # step 11
    run.log_at({"sys": 5})                 # at the current step, the counter stays
    np = pytest.importorskip("numpy")
    run.log({"a": np.float32(6), "text": "no"})  # step 12
    run.finish(timeout=10)
    cols = next(iter(client.batches.values()))
    got = list(zip(cols["key"], cols["value"], cols["step"]))
    assert got == [("a", 1.0, 0), ("a", 2.0, 10), ("a", 3.0, 11), ("nested/b", 4.0, 11),
                   ("sys", 5.0, 11), ("a", 6.0, 12)]
    assert run.dropped_points == 1


def test_log_costs_microseconds():
    """The training thread only queues (a loose bound: the CI box is shared)."""
    client = FakeClient()
    run = Run(client, {"run_id": "r_test4"}, flush_interval=10, flush_points=10**9,
              system_interval=None)
    data = {"loss": 0.5, "acc": 0.9}
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(20_000):
            run.log(data, step=i)
        best = min(best, (time.perf_counter() - start) / 20_000)
    run.finish(timeout=30)
    assert best < 50e-6, f"{best * 1e6:.1f} us per log call"
    assert len(client.steps("loss")) == 60_000


def test_notebook_exposes_tracking():
    import workbench.notebook as nb
    import workbench.track as track

    assert nb.init is track.init and nb.log is track.log and nb.finish is track.finish
    with pytest.raises(RuntimeError, match="init"):
        nb.watch(object())  # not a run id: workbench.track.watch, and no current run


def test_service_takes_metrics_only_for_live_external_runs(tmp_path):
    from tests.utils.factories import mlp, quick_hyperparams
    from workbench.service import Workbench
    from workbench.service.errors import Conflict, NotFound

    service = Workbench(Store(tmp_path / "wb.duckdb"))
    try:
        cols = {"key": ["x"], "value": [1.0], "step": [0], "epoch": [0], "time": [time.time()]}
        model = service.create_model(mlp(8), quick_hyperparams(epochs=1))
        engine_run, _ = service.create_run(model.model_id)
        with pytest.raises(Conflict, match="trained by workbench"):
            service.log_metrics(engine_run.run_id, cols, batch_id="b")
        with pytest.raises(NotFound):
            service.log_metrics("r_missing", cols)
        seen: list[dict] = []
        run = service.create_external_run(name="n", config={"a": 1}, tags=["t"], device="cpu")
        unsubscribe = service.bus.subscribe(seen.append, run_id=run.run_id)
        assert service.log_metrics(run.run_id, cols, batch_id="b")[1] is True
        assert service.log_metrics(run.run_id, cols, batch_id="b") == (None, False)
        unsubscribe()
        assert [e["type"] for e in seen] == ["metrics"]  # a duplicate is not published
        assert service.get_run(run.run_id).metrics == {"x": 1.0}
        service.cancel_run(run.run_id)  # from the app: the client's next batch gets 409
        with pytest.raises(Conflict, match="already cancelled"):
            service.log_metrics(run.run_id, cols, batch_id="c")
        _, meta = service.external_run_info(run.run_id)
        assert meta == {"name": "n", "experiment": "default", "tags": ["t"], "config": {"a": 1}}
    finally:
        service.close()


# ---- names and tags: what the API accepts, the store takes -----------------------------------
@pytest.mark.parametrize("field, value", [
    ("tags", ["a\x1cb"]),   # U+001C: Python's isspace() says space, pydantic's pattern did not
    ("tags", ["\x1f"]),
    ("name", "\x1c"),       # stripped by the store to nothing
    ("experiment", " \x1d "),
])
def test_api_refuses_names_and_tags_the_store_would_refuse(field, value):
    # Found by schemathesis: these passed the body's validation and were a 500 in the store.
    from pydantic import ValidationError

    from workbench.api.routes.tracking import TrackedRunCreate
    body = {"name": "run", field: value}
    with pytest.raises(ValidationError) as info:
        TrackedRunCreate.model_validate(body)
    assert info.value.errors()[0]["loc"][0] == field


def test_names_and_tags_the_api_accepts_are_stored_as_given(tmp_path):
    from workbench.api.routes.tracking import TrackedRunCreate
    body = TrackedRunCreate.model_validate({"name": " Æ\u0082 ", "experiment": "e\u00a0x",
                                            "tags": ["1/ýT", "two words"]})
    with Store(tmp_path / "wb.duckdb") as store:
        run = store.create_external_run(hyperparams={"config": {}}, name=body.name,
                                        experiment=body.experiment, tags=body.tags)
        assert (run.name, list(run.tags)) == ("Æ\u0082", ["1/ýT", "two words"])
