"""Service-level errors that the faces (API, app, CLI) translate into their own terms."""

from __future__ import annotations


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
