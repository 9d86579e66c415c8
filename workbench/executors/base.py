"""The executor interface: where a run executes (local process, Jupyter kernel, remote node,
torch.distributed group) behind one small protocol.

An executor takes a ``RunSpec`` and a sink; it delivers the run's events by calling the sink
(from its own thread) and returns a handle to cancel or wait on the run. Executors never touch
the store: the server process alone writes it, from the events it receives.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

from ..events import Sink
from ..train.job import RunSpec


@runtime_checkable
class RunHandle(Protocol):
    run_id: str

    def cancel(self) -> None:
        """Ask the run to stop; it ends with a ``run.cancelled`` event."""

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the run's terminal event was delivered; True if it was."""

    @property
    def done(self) -> bool: ...


@runtime_checkable
class Executor(Protocol):
    kind: str  # "local" | "local-kernel" | "node" | "distributed" | "ray"

    def submit(self, spec: RunSpec, sink: Sink) -> RunHandle:
        """Start the run; every event (ending with exactly one terminal event:
        run.completed, run.failed or run.cancelled) goes to ``sink``."""

    def close(self) -> None:
        """Release processes, kernels and connections."""


class LiveHandles:
    """The handles an executor started (finished ones dropped as new ones come), and what
    ``Executor.close`` does with them: cancel every live run, wait, then kill the rest."""

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(self, handle: Any) -> Any:
        with self._lock:
            self._handles = {k: h for k, h in self._handles.items() if not h.done}
            self._handles[handle.run_id] = handle
        return handle

    def close(self, timeout: float, *, kill: bool = True) -> None:
        """Cancel the live runs and wait up to ``timeout`` s in all; with ``kill``, kill a run
        that has not stopped by its share of it (then wait 5 s more for its end)."""
        with self._lock:
            live = [h for h in self._handles.values() if not h.done]
        for handle in live:
            handle.cancel()
        for handle in live:
            if not handle.join(timeout / max(1, len(live))) and kill:
                handle.kill()
                handle.join(5)
