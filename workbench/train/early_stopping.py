"""Early stopping on the Cortex semantics: stop after ``patience`` epochs without an
improvement of at least ``min_delta`` in the monitored loss (validation loss, or training loss
when there is no validation split)."""

from __future__ import annotations

import math
from typing import Any


class EarlyStopping:
    def __init__(self, patience: int | None, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.stale = math.inf, 0

    def update(self, metrics: dict[str, Any]) -> bool:
        """Record one epoch's metrics; True when training should stop now."""
        monitored = metrics["val_loss"] if metrics.get("val_loss") is not None else metrics["train_loss"]
        if monitored < self.best - self.min_delta:
            self.best, self.stale = monitored, 0
        else:
            self.stale += 1
        return bool(self.patience and self.stale >= self.patience)
