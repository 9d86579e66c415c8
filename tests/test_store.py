"""The DuckDB store, against real database files (no mocks)."""

from __future__ import annotations

import base64
import dataclasses
import json
import signal
import struct
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest

from workbench.config import get_settings
from workbench.events import make_event
from workbench.store import (
    LATEST_VERSION,
    MetricRecord,
    Migration,
    ModelRecord,
    ParamRecord,
    RunRecord,
    Store,
    StoreLockedError,
    safetensors_data_bytes,
)
from workbench.store.migrations import current_version, migrate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "wb.duckdb") as s:
        yield s


def _model(store: Store, **kw) -> ModelRecord:
    return store.create_model(
        architecture=kw.get("architecture", {"layers": [{"type": "linear", "out": 10}]}),
        hyperparams=kw.get("hyperparams", {"lr": 0.01}),
        name=kw.get("name"),
    )


def _safetensors_blob(n_floats: int = 6) -> bytes:
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\x01" * (4 * n_floats)


def _run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- migrations ---------------------------------------------------------------------------------


def test_migrations_idempotent_and_versioned(tmp_path):
    path = tmp_path / "nested" / "dir" / "wb.duckdb"
    Store(path).close()  # creates the parent directory
    Store(path).close()
    con = duckdb.connect(str(path))
    try:
        rows = con.execute("SELECT version, description FROM schema_version").fetchall()
        assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))
        assert migrate(con) == []
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
        assert {"models", "runs", "metrics", "params", "events", "schema_version"} <= tables
    finally:
        con.close()


def test_appended_migration_applies_once(tmp_path):
    from workbench.store.migrations import MIGRATIONS

    con = duckdb.connect(str(tmp_path / "m.duckdb"))
    try:
        n = len(MIGRATIONS) + 1
        steps = [*MIGRATIONS, Migration(n, "tags", ("CREATE TABLE tags (run_id VARCHAR)",))]
        assert migrate(con, steps) == list(range(1, n + 1))
        assert migrate(con, steps) == []
        assert current_version(con) == n
        # A broken step rolls back and records nothing.
        bad = [*steps, Migration(n + 1, "bad", ("CREATE TABLE t3 (a INT)", "SELECT * FROM nope"))]
        with pytest.raises(duckdb.Error):
            migrate(con, bad)
        assert current_version(con) == n
        assert "t3" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    finally:
        con.close()


def test_default_path_from_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        with Store() as s:
            assert s.path == get_settings().db_path
            assert s.path.exists()
    finally:
        get_settings.cache_clear()


# -- models and runs ----------------------------------------------------------------------------


def test_model_crud(store):
    m = _model(store, name="mlp", hyperparams={"lr": 0.1, "batch": 64})
    assert isinstance(m, ModelRecord) and m.model_id.startswith("m_") and m.name == "mlp"
    assert m.created_at.tzinfo is timezone.utc
    got = store.get_model(m.model_id)
    assert got == m
    assert store.get_model("m_nope") is None
    unnamed = _model(store)
    assert unnamed.name == unnamed.model_id
    assert [x.model_id for x in store.list_models()] == [unnamed.model_id, m.model_id]
    assert [x.model_id for x in store.list_models(limit=1, offset=1)] == [m.model_id]
    assert store.count_models() == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "x"  # type: ignore[misc]


def test_run_crud_and_states(store):
    m = _model(store)
    r = store.create_run(model_id=m.model_id, hyperparams={"lr": 0.1}, epochs_total=4)
    assert isinstance(r, RunRecord)
    assert r.run_id.startswith("r_") and r.state == "queued" and r.epoch == 0
    assert (r.dataset, r.target, r.epochs_total, r.metrics) == ("mnist", "local", 4, {})
    assert store.get_run(r.run_id) == r
    assert store.get_run("r_nope") is None
    with pytest.raises(ValueError, match="unknown model"):
        store.create_run(model_id="m_nope", hyperparams={}, epochs_total=1)

    store.set_run_state(r.run_id, "running", device="cuda:0")
    running = store.get_run(r.run_id)
    assert running.state == "running" and running.device == "cuda:0"
    assert running.started_at is not None and running.finished_at is None

    store.set_run_state(r.run_id, "failed", error="boom")
    failed = store.get_run(r.run_id)
    assert (failed.state, failed.error) == ("failed", "boom")
    assert failed.finished_at >= failed.started_at
    for state in ("running", "queued", "succeeded"):
        with pytest.raises(ValueError, match="already failed"):
            store.set_run_state(r.run_id, state)
    assert store.get_run(r.run_id).state == "failed"
    with pytest.raises(ValueError):
        store.set_run_state(r.run_id, "exploded")
    with pytest.raises(ValueError, match="unknown run"):
        store.set_run_state("r_nope", "running")


def test_pagination_with_cursor(store):
    m = _model(store)
    created = [
        store.create_run(model_id=m.model_id, hyperparams={"i": i}, epochs_total=1).run_id
        for i in range(45)
    ]
    for order, expected in (("asc", created), ("desc", created[::-1])):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page, cursor = store.list_runs(limit=10, cursor=cursor, order=order)
            pages += 1
            seen += [r.run_id for r in page]
            if cursor is None:
                break
            assert isinstance(cursor, str)
        assert pages == 5
        assert seen == expected  # no duplicates, no gaps, creation order
    # A page that ends exactly at the last row has no next cursor.
    page, cursor = store.list_runs(limit=45)
    assert len(page) == 45 and cursor is None
    for bad in ("garbage!!", "", "bm90IGpzb24", base64.urlsafe_b64encode(b'{"a": 1}').decode()):
        with pytest.raises(ValueError, match="invalid cursor"):
            store.list_runs(cursor=bad)
    with pytest.raises(ValueError):
        store.list_runs(order="sideways")


def test_filters_and_counts(store):
    a, b = _model(store), _model(store)
    r1 = store.create_run(model_id=a.model_id, hyperparams={}, epochs_total=1)
    r2 = store.create_run(
        model_id=a.model_id, hyperparams={}, epochs_total=1, dataset="fashion_mnist"
    )
    r3 = store.create_run(model_id=b.model_id, hyperparams={}, epochs_total=1, target="colab")
    store.set_run_state(r2.run_id, "running")

    def ids(**kw):
        return {r.run_id for r in store.list_runs(**kw)[0]}

    assert ids(model_id=a.model_id) == {r1.run_id, r2.run_id}
    assert ids(state="running") == {r2.run_id}
    assert ids(state=["queued", "running"]) == {r1.run_id, r2.run_id, r3.run_id}
    assert ids(dataset="fashion_mnist") == {r2.run_id}
    assert ids(target="colab") == {r3.run_id}
    assert ids(model_id=a.model_id, state="queued") == {r1.run_id}
    assert store.count_runs() == 3
    assert store.count_runs(model_id=a.model_id) == 2
    assert store.count_runs(state="queued") == 2
    assert store.count_runs(target="colab", model_id=a.model_id) == 0


# -- events -------------------------------------------------------------------------------------


def test_apply_event_lifecycle(store):
    m = _model(store)
    r = store.create_run(model_id=m.model_id, hyperparams={"lr": 0.1}, epochs_total=5)
    rid = r.run_id
    store.apply_event(make_event("run.started", rid, device="cpu", epochs_total=3, n_train=100))
    run = store.get_run(rid)
    assert (run.state, run.device, run.epochs_total) == ("running", "cpu", 3)
    for epoch in (1, 2, 3):
        for step in (5, 10):
            store.apply_event(make_event("step", rid, epoch=epoch, step=step, loss=1.0 / step))
        store.apply_event(
            make_event(
                "epoch",
                rid,
                epoch=epoch,
                step=10,
                train_loss=1.0 / epoch,
                train_accuracy=0.5 + epoch / 10,
                val_loss=1.5 / epoch,
                val_accuracy=0.4 + epoch / 10,
                epoch_time_s=0.25,
                peak_memory_bytes=1024,
                custom_metric=7,
                note="not a number",
                flag=True,
            )
        )
    assert store.get_run(rid).epoch == 3
    blob = _safetensors_blob(6)
    store.apply_event(
        make_event(
            "run.completed",
            rid,
            epochs_run=3,
            stopped_early=False,
            metrics={"val_accuracy": 0.7},
            parameters_safetensors_b64=base64.b64encode(blob).decode(),
        )
    )
    done = store.get_run(rid)
    assert done.state == "succeeded" and done.finished_at is not None and done.error is None
    assert done.metrics == {
        "train_loss": pytest.approx(1 / 3),
        "train_accuracy": pytest.approx(0.8),
        "val_loss": pytest.approx(0.5),
        "val_accuracy": pytest.approx(0.7),
        "epoch_time_s": 0.25,
        "peak_memory_bytes": 1024.0,
        "custom_metric": 7.0,
    }
    params = store.get_params(done.param_id)
    assert isinstance(params, ParamRecord)
    assert params.safetensors == blob and params.size_bytes == 24 == safetensors_data_bytes(blob)
    assert (params.model_id, params.run_id) == (m.model_id, rid)
    assert [p.param_id for p in store.list_params(model_id=m.model_id)] == [done.param_id]
    assert store.list_params(model_id="m_other") == []

    metrics = store.get_metrics(rid)
    assert all(isinstance(x, MetricRecord) for x in metrics)
    keys = [(x.epoch, x.step if x.step is not None else -1, x.name) for x in metrics]
    assert keys == sorted(keys)
    assert len([x for x in metrics if x.name == "step_loss"]) == 6
    val = store.get_metrics(rid, names=["val_accuracy"])
    assert [x.epoch for x in val] == [1, 2, 3]
    assert [x.value for x in val] == pytest.approx([0.5, 0.6, 0.7])

    events = store.list_events(rid)
    assert [e["type"] for e in events] == ["run.started"] + (["step", "step", "epoch"] * 3) + [
        "run.completed"
    ]
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    completed = events[-1]["data"]
    assert "parameters_safetensors_b64" not in completed  # the blob is kept once, in params
    assert completed["param_id"] == done.param_id and completed["size_bytes"] == 24
    assert isinstance(events[0]["time"], float)
    assert [e["id"] for e in store.list_events(rid, after_id=ids[-2])] == [ids[-1]]

    # Terminal: later events are logged but change nothing.
    store.apply_event(make_event("run.failed", rid, error="late"))
    store.apply_event(make_event("epoch", rid, epoch=4, step=1, train_loss=9.0))
    after = store.get_run(rid)
    assert (after.state, after.error, after.epoch) == ("succeeded", None, 3)
    assert after.metrics == done.metrics
    assert [e["type"] for e in store.list_events(rid, after_id=ids[-1])] == [
        "run.failed",
        "epoch",
    ]
    with pytest.raises(ValueError):
        store.set_run_state(rid, "running")


def test_apply_event_failure_cancel_and_unknown_run(store):
    m = _model(store)
    r1 = store.create_run(model_id=m.model_id, hyperparams={}, epochs_total=2)
    r2 = store.create_run(model_id=m.model_id, hyperparams={}, epochs_total=2)
    store.apply_event(make_event("run.started", r1.run_id, device="cpu"))
    store.apply_event(make_event("run.failed", r1.run_id, error="CUDA out of memory"))
    assert (store.get_run(r1.run_id).state, store.get_run(r1.run_id).error) == (
        "failed",
        "CUDA out of memory",
    )
    store.apply_event(make_event("run.cancelled", r2.run_id, epoch=0))
    assert store.get_run(r2.run_id).state == "cancelled"
    # completed without weights: succeeded, no params
    r3 = store.create_run(model_id=m.model_id, hyperparams={}, epochs_total=1)
    store.apply_event(make_event("run.completed", r3.run_id, epochs_run=1))
    assert store.get_run(r3.run_id).state == "succeeded"
    assert store.get_run(r3.run_id).param_id is None
    with pytest.raises(ValueError, match="unknown run"):
        store.apply_event(make_event("epoch", "r_missing", epoch=1, train_loss=1.0))
    with pytest.raises(ValueError):
        store.apply_event({"type": "epoch"})
    assert store.query("SELECT count(*) FROM events WHERE run_id = 'r_missing'")[1] == [(0,)]


def test_concurrent_writers_threads(store):
    m = _model(store)
    runs = [store.create_run(model_id=m.model_id, hyperparams={}, epochs_total=1) for _ in range(4)]
    errors: list[BaseException] = []

    def work(run_id: str) -> None:
        try:
            store.apply_event(make_event("run.started", run_id, device="cpu"))
            for step in range(25):
                store.apply_event(make_event("step", run_id, epoch=1, step=step, loss=0.1))
                store.get_run(run_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r.run_id,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for r in runs:
        assert len(store.get_metrics(r.run_id, names=["step_loss"])) == 25
        assert len(store.list_events(r.run_id)) == 26


# -- ad-hoc SQL -----------------------------------------------------------------------------------


def test_query_read_only(store, tmp_path):
    m = _model(store)
    for _ in range(3):
        store.create_run(model_id=m.model_id, hyperparams={}, epochs_total=1)
    cols, rows = store.query("SELECT run_id, state FROM runs ORDER BY created_at")
    assert cols == ["run_id", "state"] and len(rows) == 3 and rows[0][1] == "queued"
    assert store.query("WITH x AS (SELECT 42 AS a) SELECT a FROM x;") == (["a"], [(42,)])
    assert len(store.query("SELECT * FROM range(100)", limit=7)[1]) == 7
    assert store.query("SELECT 1 AS one; -- trailing comment") == (["one"], [(1,)])

    before = store.query("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM models)")
    outside = tmp_path / "out.csv"
    refused = [
        "INSERT INTO models VALUES ('m_x', 'x', '{}', '{}', now())",
        "UPDATE runs SET state = 'failed'",
        "DELETE FROM runs",
        "DROP TABLE runs",
        "CREATE TABLE evil AS SELECT * FROM runs",
        f"COPY runs TO '{outside}'",
        f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
        "SELECT 1; DROP TABLE runs",
        "PRAGMA database_size",
        "CHECKPOINT",
        "SET threads = 1",
    ]
    for sql in refused:
        with pytest.raises(PermissionError, match="only read-only SELECT"):
            store.query(sql)
    # A side-effecting function inside a SELECT is refused by name (and the READ ONLY
    # transaction would block it too). More escapes: tests/security/test_sql_sandbox.py.
    with pytest.raises(PermissionError, match=r"nextval\(\) is not allowed"):
        store.query("SELECT nextval('events_id_seq')")
    assert (
        store.query("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM models)") == before
    )
    assert not outside.exists()
    assert store.list_events("r_x") == []
    m2 = _model(store)  # the sequence and the writer path still work afterwards
    assert store.get_model(m2.model_id) is not None

    with pytest.raises(ValueError, match="syntax error"):
        store.query("SELEC * FROM runs")
    with pytest.raises(PermissionError, match="'no_such_table' is not one of the queryable views"):
        store.query("SELECT * FROM no_such_table")
    with pytest.raises(ValueError, match="no_such_column"):
        store.query("SELECT no_such_column FROM runs")


# -- read-only, durability, locking ---------------------------------------------------------------


def test_read_only_store(tmp_path):
    path = tmp_path / "wb.duckdb"
    with pytest.raises(FileNotFoundError):
        Store(path, read_only=True)
    with Store(path) as s:
        m = _model(s)
    with Store(path, read_only=True) as ro:
        assert ro.get_model(m.model_id) == m
        assert ro.interrupted_on_open == []
        with pytest.raises(PermissionError):
            _model(ro)
        assert ro.query("SELECT count(*) FROM models")[1] == [(1,)]


CRASH_CHILD = """
import os, signal, sys
from workbench.events import make_event
from workbench.store import Store

s = Store(sys.argv[1])
m = s.create_model(architecture={"layers": []}, hyperparams={})
r = s.create_run(model_id=m.model_id, hyperparams={}, epochs_total=5)
queued = s.create_run(model_id=m.model_id, hyperparams={}, epochs_total=5)
s.apply_event(make_event("run.started", r.run_id, device="cpu"))
for e in (1, 2):
    s.apply_event(make_event("epoch", r.run_id, epoch=e, step=10 * e,
                             train_loss=1.0 / e, val_accuracy=0.5 + e / 10))
print(r.run_id, queued.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

OPEN_CHILD = """
import sys
from workbench.store import Store, StoreLockedError

for read_only in (False, True):
    try:
        Store(sys.argv[1], read_only=read_only).close()
        print("opened")
    except StoreLockedError as exc:
        print("locked", "WORKBENCH_SERVER_URL" in str(exc), exc.path == __import__("pathlib").Path(sys.argv[1]))
"""


def test_crash_survival_and_lock(tmp_path):
    path = tmp_path / "crash.duckdb"
    child = _run_child(CRASH_CHILD, str(path))
    assert child.returncode == -signal.SIGKILL, child.stderr
    run_id, queued_id = child.stdout.split()

    with Store(path) as s:
        assert s.interrupted_on_open == [run_id]
        run = s.get_run(run_id)
        assert (run.state, run.error, run.epoch) == ("failed", "interrupted", 2)
        assert run.finished_at is not None
        assert run.metrics == {"train_loss": 0.5, "val_accuracy": pytest.approx(0.7)}
        epochs = {x.epoch for x in s.get_metrics(run_id)}
        assert epochs == {1, 2}
        assert s.get_run(queued_id).state == "queued"  # the server decides about queued runs
        assert s.list_events(run_id)[-1]["type"] == "run.failed"

        # While this process holds the store, another process can neither write nor read it.
        other = _run_child(OPEN_CHILD, str(path))
        assert other.returncode == 0, other.stderr
        assert other.stdout.split("\n")[:2] == ["locked True True", "locked True True"]

    # Recovery happens once: reopening finds nothing new to mark.
    with Store(path) as s:
        assert s.interrupted_on_open == []
    # A second Store in the same process shares the database and must not "recover" live runs.
    with Store(path) as first:
        m = _model(first)
        live = first.create_run(model_id=m.model_id, hyperparams={}, epochs_total=1)
        first.set_run_state(live.run_id, "running")
        with Store(path) as second:
            assert second.interrupted_on_open == []
            assert second.get_run(live.run_id).state == "running"
        with pytest.raises(StoreLockedError, match="different mode"):
            Store(path, read_only=True)


def test_timestamps_are_utc(store):
    m = _model(store)
    r = store.create_run(model_id=m.model_id, hyperparams={}, epochs_total=1)
    now = datetime.now(timezone.utc)
    assert abs((now - r.created_at).total_seconds()) < 60
    ev = make_event("step", r.run_id, epoch=1, step=1, loss=0.5)
    store.apply_event(ev)
    (metric,) = store.get_metrics(r.run_id)
    assert metric.time.tzinfo is timezone.utc
    assert metric.time.timestamp() == pytest.approx(ev["time"], abs=1e-5)
    assert store.list_events(r.run_id)[0]["time"] == pytest.approx(ev["time"], abs=1e-5)
