"""``EventBus``: in-process fan-out of training events to live watchers (API, app, notebook).

Thread-safe: events are published from executor reader threads, subscribers come and go from
request handlers. A failing subscriber is logged and skipped, never breaks the publisher.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        # token -> (callback, run_id filter or None)
        self._subs: dict[int, tuple[Callback, str | None]] = {}

    def subscribe(self, callback: Callback, *, run_id: str | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` for every event (of ``run_id`` only, if given).
        Returns a function that unsubscribes (idempotent)."""
        with self._lock:
            token = next(self._ids)
            self._subs[token] = (callback, run_id)

        def unsubscribe() -> None:
            with self._lock:
                self._subs.pop(token, None)

        return unsubscribe

    def publish(self, event: dict[str, Any]) -> None:
        run_id = event.get("run_id")
        with self._lock:
            targets = [cb for cb, want in self._subs.values() if want is None or want == run_id]
        for callback in targets:
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed on %s", event.get("type"))

    def __len__(self) -> int:
        with self._lock:
            return len(self._subs)
