"""Service-level errors that the faces (API, app, CLI) translate into their own terms."""

from __future__ import annotations

# Raised by the service's submit checks (defined with the spec, which is torch-free).
from ..spec import SubmitError


class NotFound(KeyError):
    """An unknown (or malformed) id. ``kind`` is "model", "run" or "param"."""

    def __init__(self, kind: str, id: str):
        super().__init__(f"{kind} {id!r} not found")
        self.kind = kind
        self.id = id

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Conflict(ValueError):
    """The request contradicts the current state (e.g. hyperparameters of a live run)."""


class InvalidInput(ValueError):
    """Inference inputs that do not fit the model; ``errors`` names each offending field."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


class QueueFull(RuntimeError):
    """The run queue holds ``limits.max_queued_runs`` runs; try again after ``retry_after_s``."""

    def __init__(self, queued: int, limit: int, retry_after_s: int = 5):
        super().__init__(f"the run queue is full ({queued} runs waiting, the limit is {limit}: "
                         "WORKBENCH_MAX_QUEUED_RUNS); try again later")
        self.queued, self.limit, self.retry_after_s = queued, limit, retry_after_s


__all__ = ["Conflict", "InvalidInput", "NotFound", "QueueFull", "SubmitError"]
