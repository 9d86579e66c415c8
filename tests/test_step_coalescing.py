"""Step events are coalesced (``workbench.store.events``): visible at once, written together."""

from __future__ import annotations

import pytest

from workbench import events as ev
from workbench.store import Store

ARCH = {"input_size": 4, "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}


def _run(store: Store) -> str:
    model = store.create_model(architecture=ARCH, hyperparams={"epochs": 2})
    run = store.create_run(model_id=model.model_id, hyperparams={}, epochs_total=2)
    store.apply_event(ev.make_event(ev.RUN_STARTED, run.run_id, epochs_total=2, device="cpu"))
    return run.run_id


def _written_steps(store: Store, run_id: str) -> int:
    """Step events in the table itself (not the buffer)."""
    con = store._conn(flush=False)
    return con.execute("SELECT count(*) FROM events WHERE run_id = ? AND type = ?",
                       [run_id, ev.STEP]).fetchone()[0]


def _step(run_id: str, step: int, loss: float = 0.5) -> dict:
    return ev.make_event(ev.STEP, run_id, epoch=1, step=step, loss=loss)


def test_steps_are_listed_at_once_and_written_with_the_next_event(tmp_path):
    with Store(tmp_path / "wb.duckdb") as store:
        run_id = _run(store)
        started = store.list_events(run_id)[-1]["id"]
        ids = [store.apply_event(_step(run_id, i)) for i in range(5)]
        assert ids == sorted(ids) and ids[0] > started and len(set(ids)) == 5
        assert _written_steps(store, run_id) == 0  # buffered, not one commit each
        listed = store.list_events(run_id, after_id=started)
        assert [e["id"] for e in listed] == ids and {e["type"] for e in listed} == {ev.STEP}
        assert [e["data"]["step"] for e in store.list_events(run_id, after_id=ids[2])] == [3, 4]
        assert len(store.list_events(run_id, after_id=started, limit=2)) == 2
        epoch = store.apply_event(ev.make_event(ev.EPOCH, run_id, epoch=1, step=5,
                                                train_loss=0.4))
        assert epoch > ids[-1]
        assert _written_steps(store, run_id) == 5
        assert [e["id"] for e in store.list_events(run_id, after_id=started)] == [*ids, epoch]


def test_any_other_read_sees_them_and_close_writes_them(tmp_path):
    path = tmp_path / "wb.duckdb"
    with Store(path) as store:
        run_id = _run(store)
        store.apply_event(_step(run_id, 1, loss=0.25))
        rows = store._read("SELECT value FROM metrics WHERE run_id = ? AND name = 'step_loss'",
                           [run_id])
        assert rows == [(0.25,)]
        last = store.apply_event(_step(run_id, 2))
    with Store(path) as store:  # the second step was written when the store closed
        assert _written_steps(store, run_id) == 2
        assert store.apply_event(_step(run_id, 3)) > last  # ids keep increasing after reopen
        assert len({e["id"] for e in store.list_events(run_id)}) == len(store.list_events(run_id))


def test_a_full_buffer_is_written_without_another_event(tmp_path):
    from workbench.store.events import STEP_BATCH

    with Store(tmp_path / "wb.duckdb") as store:
        run_id = _run(store)
        for i in range(STEP_BATCH):
            store.apply_event(_step(run_id, i))
        assert _written_steps(store, run_id) == STEP_BATCH


def test_steps_of_an_ended_run_are_logged_without_metrics(tmp_path):
    with Store(tmp_path / "wb.duckdb") as store:
        run_id = _run(store)
        store.apply_event(ev.make_event(ev.RUN_CANCELLED, run_id))
        store.apply_event(_step(run_id, 1))
        assert store.list_events(run_id)[-1]["type"] == ev.STEP
        assert store._read("SELECT count(*) FROM metrics WHERE run_id = ?", [run_id]) == [(0,)]
        with pytest.raises(ValueError, match="unknown run"):
            store.apply_event(_step("r_nosuchrun", 1))
