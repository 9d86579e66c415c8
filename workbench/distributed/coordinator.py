"""The coordinator: start every rank of a job, relay its events, and fail fast when a rank or
the worker holding it goes away.

Participants are anything with ``name``, ``start(assignment)``, ``gone() -> str | None``,
``finished()`` and ``stop()``: a local rank process (:class:`~.launch.LocalRank`) or a rank on a
``workbench worker`` (:class:`~.worker.RemoteRank`). The job ends with rank 0's
``run.completed``, the first ``run.failed``, or a participant that is gone; on failure every
other rank is stopped, so nothing is left hanging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .. import events as ev
from .channel import StoreReader
from .job import DistJob
from .launch import Rendezvous, assignment


class JobFailed(RuntimeError):
    """A distributed job failed; the message says which rank/device and why."""


class JobCancelled(JobFailed):
    """The job was stopped on request."""


class Participant(Protocol):
    name: str

    def start(self, work: dict[str, Any]) -> None: ...

    def gone(self) -> str | None: ...

    def finished(self) -> bool: ...

    def stop(self) -> None: ...


def run_job(
    job: DistJob,
    participants: Sequence[Participant],
    *,
    sink: ev.Sink | None = None,
    store_host: str = "127.0.0.1",
    rendezvous: Rendezvous | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 0.1,
) -> dict[str, Any]:
    """Run ``job`` over ``participants`` (rank ``r`` on ``participants[r]``). Events go to
    ``sink`` as they arrive; returns rank 0's ``run.completed`` data. Raises
    :class:`JobFailed` (after emitting ``run.failed``) on any failure."""
    if len(participants) != job.world_size:
        raise ValueError(f"{len(participants)} participants for world_size {job.world_size}")
    sink = sink or ev.null_sink
    should_stop = should_stop or (lambda: False)
    rdzv = rendezvous or Rendezvous(timeout_s=job.timeout_s)
    reader = StoreReader(rdzv.job_store(job.job_id), job.world_size)
    run_id = job.run.run_id
    completed: dict[str, Any] | None = None
    reporters: set[int] = set()  # ranks that reported their own failure
    try:
        for rank, p in enumerate(participants):
            try:
                p.start(assignment(job, rank, store_host, rdzv.port))
            except Exception as exc:
                raise JobFailed(f"could not start rank {rank} on {p.name}: {exc}") from exc
        while True:
            reported: str | None = None
            for rank, event in reader.poll():
                if event["type"] == ev.RUN_FAILED:
                    reported = reported or event["data"].get("error", "failed")
                    reporters.add(rank)
                elif event["type"] == ev.RUN_COMPLETED and rank == 0:
                    completed = event["data"]
                    sink(event)
                else:
                    sink(event)
            left = _first_gone(participants, reporters)
            if reported and not left:
                # A rank's error is often the echo of a peer that died: look for that first.
                time.sleep(1.0)
                left = _first_gone(participants, reporters)
            if left:
                raise JobFailed(f"{left}" + (f"; {reported}" if reported else ""))
            if reported:
                raise JobFailed(reported)
            if completed is not None and all(p.finished() for p in participants):
                return completed
            if should_stop():
                sink(ev.make_event(ev.RUN_CANCELLED, run_id))
                raise JobCancelled(f"job {job.job_id} was cancelled")
            time.sleep(poll_s)
    except JobCancelled:
        raise
    except JobFailed as exc:
        sink(ev.make_event(ev.RUN_FAILED, run_id, error=str(exc)))
        raise
    finally:
        for p in participants:
            try:
                p.stop()
            except Exception:  # a vanished worker cannot be stopped; it is gone anyway
                pass


def _first_gone(participants: Sequence[Participant], reporters: set[int]) -> str | None:
    """The first participant that vanished without saying why (a rank that reported its own
    error exits non-zero too: its report is the better message)."""
    for rank, p in enumerate(participants):
        why = None if rank in reporters else p.gone()
        if why:
            return f"{p.name} (rank {rank}) left the job: {why}"
    return None
