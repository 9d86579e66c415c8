"""Status of an active run from the one writer's in-memory projection: after the first read,
step and epoch events update the cached record and no status read goes to DuckDB until an
event the projection does not cover (the end) -- and the projected record always equals what
the store says."""

from __future__ import annotations

import dataclasses

from workbench import events as ev
from workbench.service import Workbench
from workbench.store import Store


def _comparable(run):
    return dataclasses.replace(run, updated_at=None)  # set by each writer at its own instant


def test_step_and_epoch_events_update_the_status_without_store_reads(tmp_path, monkeypatch):
    with Store(tmp_path / "wb.duckdb") as store:
        service = Workbench(store)
        run_id = service.create_external_run(name="projected", device="cpu").run_id
        from_store = store.get_run
        reads: list[str] = []

        def counted(run_id: str):  # the real read, counted
            reads.append(run_id)
            return from_store(run_id)

        monkeypatch.setattr(store, "get_run", counted)
        assert service.get_run(run_id).epoch == 0  # cached since the run was created
        for epoch in (1, 2, 3):
            for step in range(20):
                service.record_event(ev.make_event(ev.STEP, run_id, epoch=epoch,
                                                   step=(epoch - 1) * 20 + step, loss=1.0))
            service.record_event(ev.make_event(
                ev.EPOCH, run_id, epoch=epoch, step=epoch * 20, train_loss=1 / epoch,
                val_accuracy=0.5 + epoch / 10, samples_per_s=1000.0 * epoch, strategy="x",
                devices={"1": {"total_tflops": 0.1}}))
            projected = service.get_run(run_id)
            assert projected.epoch == epoch
            assert projected.metrics == {"train_loss": 1 / epoch, "val_accuracy": 0.5 + epoch / 10,
                                         "samples_per_s": 1000.0 * epoch}
            assert _comparable(projected) == _comparable(from_store(run_id))
        assert reads == []  # 63 events, 3 status reads: none went to the store
        service.finish_external_run(run_id)
        assert service.get_run(run_id).state == "succeeded"
        assert len(reads) == 1  # the end is not projected: read from the store once
        assert _comparable(service.get_run(run_id)) == _comparable(from_store(run_id))


def test_an_out_of_order_epoch_is_read_from_the_store(tmp_path):
    with Store(tmp_path / "wb.duckdb") as store:
        service = Workbench(store)
        run_id = service.create_external_run(name="late").run_id
        for epoch in (2, 1):  # the store keeps the highest epoch's metrics
            service.get_run(run_id)
            service.record_event(ev.make_event(ev.EPOCH, run_id, epoch=epoch, train_loss=epoch))
        assert _comparable(service.get_run(run_id)) == _comparable(store.get_run(run_id))
