"""The distributed executor (target ``"distributed"``): a run whose spec says
``strategy: ddp | pipeline`` trains on ``world_size`` torch.distributed ranks (a ``single``
spec sent here trains with DDP on 2 ranks).

    DistributedExecutor().submit(RunSpec(..., strategy="ddp", world_size=2), sink)

Ranks are local processes (:func:`workbench.distributed.run_local`), or, when the spec lists
``workers`` (``"host:port"`` of running ``workbench worker``s), one rank per worker through
:func:`workbench.distributed.run_job`. The job runs on a thread of its own; its events reach the
sink as they arrive and end with exactly one terminal event. ``cancel`` stops every rank
(``run.cancelled``); a rank that fails or goes away ends the run ``run.failed`` with the reason.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .. import events as ev
from ..train.job import RunSpec
from .base import LiveHandles

log = logging.getLogger(__name__)

DISTRIBUTED = "distributed"
DEFAULT_WORLD_SIZE = 2  # ranks when a run names the target but no strategy


def parse_worker(address: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)`` (ValueError naming the address otherwise)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"worker address {address!r} is not host:port")
    return host.strip("[]"), int(port)


def dist_job(spec: RunSpec) -> Any:
    """The ``DistJob`` of a distributed run spec (ValueError for one that cannot run)."""
    from ..distributed.allocation import allocate
    from ..distributed.job import DistJob

    strategy, world = spec.strategy, spec.world_size
    if strategy == "single":  # the target picked alone (e.g. in the app): DDP, 2 local ranks
        strategy, world = "ddp", len(spec.workers) or max(world, DEFAULT_WORLD_SIZE)
    if spec.workers and len(spec.workers) != world:
        raise ValueError(f"world_size: {world} ranks for {len(spec.workers)} workers")
    plan: list[dict[str, Any]] = []
    if strategy == "pipeline":
        arch, _ = spec.parsed()
        stages = allocate(arch, [1.0] * world)
        if len(stages) != world:  # at most one stage per linear layer
            raise ValueError(f"world_size: a pipeline of this model has at most {len(stages)} "
                             f"stages, not {world}")
        plan = [s.to_json() for s in stages]
    names = list(spec.workers) or [str(r + 1) for r in range(world)]
    return DistJob(job_id=f"run-{spec.run_id}", strategy=strategy, world_size=world, run=spec,
                   plan=plan, device_names=names)


class DistributedRunHandle:
    """One distributed run on its coordinator thread."""

    def __init__(self, spec: RunSpec, sink: ev.Sink):
        self.run_id = spec.run_id
        self._sink = sink
        self._stop = threading.Event()
        self._done = threading.Event()
        self._terminal = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(spec,), daemon=True,
                                        name=f"distributed-{self.run_id}")
        self._thread.start()

    def _deliver(self, event: ev.Event) -> None:
        with self._lock:
            if self._terminal:
                return  # nothing may follow a terminal event
            self._terminal = event.get("type") in ev.ENDS_EXECUTION
        try:
            self._sink(event)
        except Exception:  # a failing sink must not stop the coordinator
            log.exception("sink failed on %s event of %s", event.get("type"), self.run_id)

    def _run(self, spec: RunSpec) -> None:
        from ..distributed.coordinator import JobFailed, run_job
        from ..distributed.launch import run_local

        try:
            job = dist_job(spec)
            if spec.workers:
                from ..distributed.trainer import _local_address_towards
                from ..distributed.worker import RemoteRank

                ranks = [RemoteRank(*parse_worker(w), name=f"worker {w}") for w in spec.workers]
                run_job(job, ranks, sink=self._deliver, should_stop=self._stop.is_set,
                        store_host=_local_address_towards(ranks[0].host, ranks[0].port))
            else:
                run_local(job, sink=self._deliver, should_stop=self._stop.is_set)
        except JobFailed:
            pass  # run_job already reported run.failed / run.cancelled
        except Exception as exc:
            self._deliver(ev.make_event(ev.RUN_FAILED, self.run_id,
                                        error=f"{type(exc).__name__}: {exc}"))
        finally:
            if not self._terminal:  # e.g. a completed event that never came
                self._deliver(ev.make_event(ev.RUN_FAILED, self.run_id,
                                            error="the distributed job ended without a result"))
            self._done.set()

    # -- RunHandle ---------------------------------------------------------------------------
    def cancel(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class DistributedExecutor:
    """Runs ``strategy: ddp | pipeline`` specs on torch.distributed ranks."""

    kind = DISTRIBUTED

    def __init__(self) -> None:
        self._handles = LiveHandles()

    def submit(self, spec: RunSpec, sink: ev.Sink) -> DistributedRunHandle:
        return self._handles.add(DistributedRunHandle(RunSpec.model_validate(spec), sink))

    def close(self, timeout: float = 15.0) -> None:
        """Cancel every live run and wait for its ranks to stop."""
        self._handles.close(timeout, kill=False)
