"""The executor interface: where a run executes (local process, Jupyter kernel, remote node,
torch.distributed group) behind one small protocol.

An executor takes a ``RunSpec`` and a sink; it delivers the run's events by calling the sink
(from its own thread) and returns a handle to cancel or wait on the run. Executors never touch
the store: the server process alone writes it, from the events it receives.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

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
