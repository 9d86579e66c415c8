"""Events from ranks to the coordinator, carried by the rendezvous TCPStore itself.

Each rank appends its events under ``ev/<rank>/<i>`` and then bumps the counter ``ev/<rank>/n``;
the coordinator reads the counters with ``add(key, 0)`` (an atomic read that never blocks) and
fetches only the keys below them. No extra transport, and it works wherever the ranks could
rendezvous in the first place.
"""

from __future__ import annotations

import json
from typing import Any

import torch.distributed as dist

from .. import events as ev


class StoreSink:
    """A sink (``workbench.events``) that publishes a rank's events to the store."""

    def __init__(self, store: dist.Store, rank: int):
        self.store, self.rank, self.sent = store, rank, 0

    def __call__(self, event: ev.Event) -> None:
        self.store.set(f"ev/{self.rank}/{self.sent}", json.dumps(event, default=str))
        self.sent += 1
        self.store.add(f"ev/{self.rank}/n", 1)


class StoreReader:
    """Coordinator side: new events of every rank since the last ``poll``."""

    def __init__(self, store: dist.Store, world_size: int):
        self.store = store
        self.cursors = [0] * world_size

    def poll(self) -> list[tuple[int, dict[str, Any]]]:
        out = []
        for rank, seen in enumerate(self.cursors):
            available = self.store.add(f"ev/{rank}/n", 0)
            for i in range(seen, available):
                out.append((rank, json.loads(self.store.get(f"ev/{rank}/{i}"))))
                self.store.delete_key(f"ev/{rank}/{i}")
            self.cursors[rank] = available
        return out
