"""The Ray executor (target ``"ray"``, ``pip install "nn-workbench[ray]"``): each run trains as
one Ray task on a Ray cluster -- the one at ``WORKBENCH_RAY_ADDRESS``, or a private local Ray
this process starts (``WORKBENCH_RAY_NUM_CPUS``, default the CPU count) when none is set.

    RayExecutor().submit(spec, sink)   # the task runs workbench.train.job.execute

Events travel through one relay actor per executor: the task pushes its events in small
batches and gets back what the owner asked (cancel, pause); a thread of the owner drains the
relay and calls the sink, so the owner stays the one writer of the store. ``cancel`` asks the
task to stop at its next step (``run.cancelled``, like every other target); a task that does
not stop within ``CANCEL_GRACE_S`` (still waiting for a CPU, or stuck) is ``ray.cancel``-ed.
The cluster's workers need nn-workbench installed (a local Ray uses this Python).
A ``strategy: ddp`` run trains as a Ray Train job instead (:mod:`.ray_ddp`), its rank 0's
events through the same relay.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections import defaultdict
from typing import Any

from .. import events as ev
from ..train.job import RunSpec
from .base import LiveHandles
from .ray_ddp import ddp_task

log = logging.getLogger(__name__)

RAY = "ray"
INSTALL_HINT = 'ray needs `pip install "nn-workbench[ray]"` (the Ray extra is not installed)'
POLL_S = 0.25  # how often the owner drains the relay, and the task pushes its events
CANCEL_GRACE_S = 20.0  # a cancelled task that has not ended by then is ray.cancel-ed


def ray_missing() -> str | None:
    """Why target ``ray`` cannot run here (None when Ray is importable)."""
    return None if importlib.util.find_spec("ray") is not None else INSTALL_HINT


class _Relay:
    """The Ray actor between tasks and their owner: events up, requests (cancel, pause) down."""

    def __init__(self) -> None:
        self._events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._asks: dict[str, set[str]] = defaultdict(set)

    def push(self, run_id: str, events: list[dict[str, Any]]) -> list[str]:
        self._events[run_id].extend(events)
        return sorted(self._asks.get(run_id, ()))

    def take(self, run_id: str) -> list[dict[str, Any]]:
        return self._events.pop(run_id, [])

    def ask(self, run_id: str, what: str) -> None:
        self._asks[run_id].add(what)

    def forget(self, run_id: str) -> None:
        self._events.pop(run_id, None)
        self._asks.pop(run_id, None)


def _ddp_uses_gpu(spec: RunSpec, resources: dict[str, float]) -> bool:
    """Whether a DDP run's Ray Train workers take a GPU each (``cuda``; ``auto`` where the
    cluster has one per rank); raises when the cluster cannot hold its ranks at all."""
    world = spec.world_size
    gpus = resources.get("GPU", 0)
    if spec.device.startswith("cuda"):
        if gpus < world:  # Ray Train would wait forever for them
            raise RuntimeError(f"device {spec.device!r}: {world} ranks need {world} GPUs; the "
                               f"Ray cluster has {gpus:g}")
        return True
    if resources.get("CPU", 0) < world:
        raise RuntimeError(f"world_size: {world} Ray Train workers need {world} CPUs; the Ray "
                           f"cluster has {resources.get('CPU', 0):g}")
    return spec.device == "auto" and gpus >= world


class RelayLink:
    """Where a Ray process trains: buffers its events and pushes them to the relay every
    ``POLL_S`` on a thread of its own; what the owner asked comes back as ``stop``/``pause``."""

    def __init__(self, run_id: str, relay: Any):
        self.run_id, self._relay = run_id, relay
        self.stop, self.pause, self._done = threading.Event(), threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._pumper = threading.Thread(target=self._pump, name=f"ray-events-{run_id}",
                                        daemon=True)

    def sink(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._buffer.append(event)

    def flush(self) -> None:
        import ray

        with self._lock:
            batch = self._buffer[:]
            self._buffer.clear()
        asks = ray.get(self._relay.push.remote(self.run_id, batch))
        if "cancel" in asks:
            self.stop.set()
        if "pause" in asks:
            self.pause.set()

    def _pump(self) -> None:
        while not self._done.wait(POLL_S):
            self.flush()

    def __enter__(self) -> RelayLink:
        self.flush()  # a cancel asked while the task waited for a CPU stops it at once
        self._pumper.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._pumper.join()
        self.flush()  # every event is in the relay before the task's result is


def _train_task(spec: dict[str, Any], relay: Any) -> None:
    """The Ray task: train ``spec`` here, its events going to ``relay``."""
    from ..train.job import execute, set_training_threads
    from .worker import _nan_safe

    with RelayLink(spec["run_id"], relay) as link:
        set_training_threads()  # the local worker's thread policy: equal results on equal CPUs
        try:
            execute(spec, sink=_nan_safe(link.sink), should_stop=link.stop.is_set,
                    should_pause=link.pause.is_set)
        except Exception:  # already reported as a run.failed event by execute/train
            pass


class RayRunHandle:
    """One run as a Ray task, and the owner thread that relays its events to the sink."""

    def __init__(self, spec: RunSpec, sink: ev.Sink, executor: RayExecutor):
        self.run_id = spec.run_id
        self.can_pause = spec.strategy != "ddp"  # Ray Train's ranks checkpoint nothing
        self._sink = sink
        self._executor = executor
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._terminal = False
        self._epoch = 0
        self._ref: Any = None
        self._relay: Any = None
        self._asked: set[str] = set()  # cancel / pause, replayed once the relay exists
        self._thread = threading.Thread(target=self._run, args=(spec,), daemon=True,
                                        name=f"ray-{self.run_id}")
        self._thread.start()

    def _deliver(self, event: ev.Event) -> None:
        with self._lock:
            if self._terminal:
                return  # nothing may follow a terminal event
            self._terminal = event.get("type") in ev.ENDS_EXECUTION
        if event.get("type") == ev.EPOCH:
            self._epoch = int(event.get("data", {}).get("epoch") or self._epoch)
        try:
            self._sink(event)
        except Exception:  # a failing sink must not stop the relay
            log.exception("sink failed on %s event of %s", event.get("type"), self.run_id)

    def _run(self, spec: RunSpec) -> None:
        error = "the Ray task ended without a result"
        try:
            ray, relay, train, ddp = self._executor.connect()
            with self._lock:
                self._relay = relay
                asked = sorted(self._asked)
            for what in asked:  # asked while Ray was starting: the task sees it at once
                relay.ask.remote(self.run_id, what)
            if self._cancel.is_set():
                return
            if spec.strategy == "ddp":
                task = ddp.remote(spec.model_dump(mode="json"), self._relay,
                                  _ddp_uses_gpu(spec, ray.cluster_resources()))
            else:
                options: dict[str, Any] = {"num_cpus": 1}
                if spec.device.startswith("cuda"):
                    if not ray.cluster_resources().get("GPU"):  # it would wait forever
                        raise RuntimeError(f"device {spec.device!r}: the Ray cluster has no "
                                           "GPU; use 'auto' or 'cpu'")
                    options["num_gpus"] = 1
                    spec = spec.model_copy(update={"device": "cuda"})  # Ray's GPU is cuda:0
                task = train.options(**options).remote(spec.model_dump(mode="json"),
                                                       self._relay)
            with self._lock:
                self._ref = task
            while True:
                ready, _ = ray.wait([self._ref], timeout=POLL_S)
                for event in ray.get(self._relay.take.remote(self.run_id)):
                    self._deliver(event)
                if ready:
                    break
            for event in ray.get(self._relay.take.remote(self.run_id)):
                self._deliver(event)
            ray.get(self._ref)
        except Exception as exc:
            error = f"on Ray: {type(exc).__name__}: {exc}"
        finally:
            if not self._terminal:
                if self._cancel.is_set():
                    self._deliver(ev.make_event(ev.RUN_CANCELLED, self.run_id, epoch=self._epoch))
                else:
                    self._deliver(ev.make_event(ev.RUN_FAILED, self.run_id, error=error[:2000]))
            if self._relay is not None:
                self._relay.forget.remote(self.run_id)
            self._done.set()

    # -- RunHandle ---------------------------------------------------------------------------
    def _ask(self, what: str) -> None:
        with self._lock:
            self._asked.add(what)
            relay = self._relay
        if relay is not None:
            relay.ask.remote(self.run_id, what)

    def cancel(self) -> None:
        self._cancel.set()
        self._ask("cancel")
        timer = threading.Timer(CANCEL_GRACE_S, self.kill)
        timer.daemon = True
        timer.start()

    def pause(self) -> None:
        """Checkpoint at the end of the current epoch and end with ``run.paused``."""
        self._ask("pause")

    def kill(self) -> None:
        """``ray.cancel(force=True)``: the task's worker process is killed."""
        with self._lock:
            ref = self._ref
        if ref is not None and not self.done:
            import ray

            try:
                ray.cancel(ref, force=True)
            except Exception as exc:  # already finished, or Ray is gone
                log.debug("ray.cancel of %s: %s", self.run_id, exc)

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class RayExecutor:
    """Runs each spec as a Ray task; connects to (or starts) Ray on its first run."""

    kind = RAY

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None):
        from ..config import get_settings

        settings = get_settings()
        self.address = address or settings.ray_address
        self.num_cpus = num_cpus or settings.ray_num_cpus
        self._offline = settings.offline
        self._handles = LiveHandles()
        # Its own lock: starting Ray takes seconds, and submit (called under the service's
        # queue lock) must never wait for that.
        self._connect_lock = threading.Lock()
        self._connected: tuple[Any, Any, Any] | None = None
        self._started_ray = False  # this executor called ray.init: close() leaves Ray

    def connect(self) -> tuple[Any, Any, Any, Any]:
        """``(ray, relay actor, remote train function, remote DDP driver)``, connecting to Ray
        on first use."""
        with self._connect_lock:
            if self._connected is not None:
                return self._connected
            import ray

            if not ray.is_initialized():
                if self.address:
                    ray.init(address=self.address, include_dashboard=False,
                             log_to_driver=False, namespace="nn-workbench")
                else:  # a private local Ray on loopback only
                    ray.init(num_cpus=self.num_cpus, include_dashboard=False,
                             log_to_driver=False, namespace="nn-workbench",
                             _node_ip_address="127.0.0.1")
                self._started_ray = True
            relay = ray.remote(num_cpus=0)(_Relay).remote()
            train = ray.remote(max_retries=0)(_train_task)
            # The driver only waits for its Ray Train workers: it takes no CPU of theirs.
            ddp = ray.remote(num_cpus=0, max_retries=0)(ddp_task)
            self._connected = (ray, relay, train, ddp)
            return self._connected

    def submit(self, spec: RunSpec, sink: ev.Sink) -> RayRunHandle:
        spec = RunSpec.model_validate(spec)
        if spec.offline is None:  # the cluster's workers follow this owner's offline mode
            spec = spec.model_copy(update={"offline": self._offline})
        return self._handles.add(RayRunHandle(spec, sink, self))

    def close(self, timeout: float = 15.0) -> None:
        """Cancel every live run, kill what has not stopped by ``timeout``, leave Ray."""
        self._handles.close(timeout)
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
