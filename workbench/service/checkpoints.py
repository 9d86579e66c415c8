"""Pause, resume and move runs, from the checkpoints the engine sends
(:mod:`workbench.train.checkpoint`, stored by :mod:`workbench.store.checkpoints`).

- pause: a queued run leaves the queue; a running one is asked (its executor's ``pause``) to
  checkpoint at the end of its current epoch and end with ``run.paused``.
- resume: a ``run.resumed`` event queues the paused run again, on the same or another target;
  the dispatched spec carries the newest checkpoint, so epochs go on numbering and the result
  equals an uninterrupted run's (same seed, CPU).
- automatic resume: an owner that finds a run its predecessor's death interrupted pauses it
  (``Store.recover_interrupted``, opt-in) and resumes it here once its executors are up.

Functions over a :class:`workbench.service.Workbench` (its write path and queue) so the facade
keeps one small method per action.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from .. import events as ev
from ..store.checkpoints import CheckpointError
from .errors import Conflict

if TYPE_CHECKING:
    from ..store import RunRecord, Store
    from .workbench import Workbench

log = logging.getLogger(__name__)


def resume_fields(store: Store, run_id: str) -> dict[str, Any]:
    """RunSpec fields that continue ``run_id`` from its newest checkpoint ({} if none)."""
    try:
        record = store.latest_checkpoint(run_id, with_tensors=True)
    except CheckpointError as exc:
        raise Conflict(f"run {run_id} cannot resume: {exc}") from None
    if record is None or record.tensors is None:
        return {}
    return {"resume_checkpoint_b64": base64.b64encode(record.tensors).decode("ascii"),
            "resume_state": record.state}


def pause(wb: Workbench, run_id: str) -> RunRecord:
    run = wb.get_run(run_id)
    if run.state == "paused":
        return run
    if run.is_terminal:
        raise Conflict(f"run {run_id} is already {run.state}; only a queued or running run "
                       "can be paused")
    if wb._take_pending(run_id):  # never started: nothing to checkpoint
        wb.record_event(ev.make_event(ev.RUN_PAUSED, run_id, epoch=run.epoch))
        return wb.get_run(run_id)
    handle = wb._active_handle(run_id)
    # can_pause: a handle whose target pauses some runs only (Ray: not a DDP run)
    pause_fn = getattr(handle, "pause", None) if getattr(handle, "can_pause", True) else None
    if handle is None or pause_fn is None:
        where = "is not training in this server" if handle is None else \
            f"trains on target {run.target!r}, which cannot pause this run"
        raise Conflict(f"run {run_id} {where}; pause works for runs training on 'local' "
                       "(cancel stops any run)")
    pause_fn()
    return run


def resume(wb: Workbench, run_id: str, *, target: str | None = None) -> RunRecord:
    run = wb.get_run(run_id)
    if run.state != "paused":
        hint = " (it is still running: pause it first)" if run.state in ("queued", "running") \
            else "; start a new run of its model instead"
        raise Conflict(f"run {run_id} is {run.state}: only a paused run can be resumed{hint}")
    target = target or run.target
    if wb._executor(target) is None:
        raise ValueError(f"target: unknown target {target!r}; known: {', '.join(wb.targets)}")
    from ..executors.targets import check_available

    check_available(target)  # TargetError (a ValueError) naming what to install
    options: dict[str, Any] = {}
    for event in wb.store.list_events(run_id):
        if event["type"] == "run.queued":
            options = event["data"]
    if (options.get("spec_overrides") or {}).get("strategy", "single") != "single":
        raise Conflict(f"run {run_id} is a {options['spec_overrides']['strategy']} run; only "
                       "single-process runs resume")
    latest = wb.store.latest_checkpoint(run_id)
    from_epoch = latest.epoch if latest is not None else 0
    wb.check_queue()
    spec = wb._dispatch_spec(run, options)  # carries the checkpoint (Conflict if unreadable)
    spec = spec.model_copy(update={"device": _device_on(target, spec.device, run.target)})
    wb.record_event(ev.make_event(
        ev.RUN_RESUMED, run_id, target=target, from_epoch=from_epoch,
        checkpoint_id=latest.checkpoint_id if latest is not None else None))
    wb._enqueue(run_id, target, spec)
    return wb.get_run(run_id)


def _device_on(target: str, device: str, previous: str) -> str:
    """A run moved to another target lets that target pick its device (the old one's CUDA
    index need not exist there)."""
    return device if target == previous else "auto"


def resume_interrupted(wb: Workbench) -> list[str]:
    """Resume every paused run whose last ``run.paused`` was an automatic one (an owner's
    death); failures are logged as the run's failure. Returns the ids resumed."""
    resumed: list[str] = []
    cursor: str | None = None
    while True:
        runs, cursor = wb.store.list_runs(state="paused", limit=500, cursor=cursor)
        for run in runs:
            paused = [e for e in wb.store.list_events(run.run_id) if e["type"] == ev.RUN_PAUSED]
            if not paused or not paused[-1]["data"].get("auto_resume"):
                continue
            try:
                resume(wb, run.run_id)
            except Exception as exc:  # the target is gone, the checkpoint is damaged, ...
                log.warning("could not resume run %s automatically: %s", run.run_id, exc)
                wb.record_event(ev.make_event(
                    ev.RUN_FAILED, run.run_id,
                    error=f"interrupted; automatic resume failed: {exc}"))
                continue
            resumed.append(run.run_id)
        if cursor is None:
            return resumed
