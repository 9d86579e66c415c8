"""An inference deployment: an asyncio micro-batcher with a concurrency cap and live metrics.

Requests are queued; one batcher task takes the first, then keeps taking more until the batch
holds ``batch_size`` samples or ``timeout_ms`` passed since the first arrived, runs one forward
pass in a worker thread (the event loop stays free) and hands each request its rows. A request
that would push the batch past ``batch_size`` waits for the next batch (a single request larger
than ``batch_size`` runs alone). At most ``max_concurrent_requests`` requests are in flight
(queued or computing); the route answers 429 beyond that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# (stacked inputs (n, in)) -> per-row outputs {"labels": [...], "probabilities": [...], ...}
Forward = Callable[[np.ndarray], dict[str, list]]

_LATENCY_WINDOW = 1000  # recent requests kept for percentiles


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    queued_at: float


@dataclass
class Stats:
    requests: int = 0
    rejected: int = 0
    failed: int = 0
    batches: int = 0
    samples: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))
    batch_sizes: deque = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))

    def view(self, in_flight: int) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, dtype=np.float64)

        def pct(q: float) -> float | None:
            return float(np.percentile(lat, q)) if lat.size else None

        return {
            "requests_total": self.requests, "requests_rejected": self.rejected,
            "requests_failed": self.failed, "in_flight": in_flight,
            "batches": self.batches, "samples": self.samples,
            "mean_batch_samples": float(np.mean(self.batch_sizes)) if self.batch_sizes else None,
            "latency_ms": {"mean": float(lat.mean()) if lat.size else None, "p50": pct(50),
                           "p95": pct(95), "p99": pct(99),
                           "max": float(lat.max()) if lat.size else None,
                           "window": int(lat.size)},
        }


class Overloaded(Exception):
    """More than ``max_concurrent_requests`` requests would be in flight."""


class MicroBatcher:
    def __init__(self, forward: Forward, *, batch_size: int, timeout_ms: float,
                 max_concurrent: int):
        self.forward = forward
        self.batch_size = batch_size
        self.timeout_s = timeout_ms / 1000.0
        self.max_concurrent = max_concurrent
        self.stats = Stats()
        self.in_flight = 0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, x: np.ndarray) -> tuple[dict[str, list], int]:
        """Rows of the outputs for ``x`` and the number of samples in its micro-batch;
        ``Overloaded`` when the cap is reached."""
        if self.in_flight >= self.max_concurrent:
            self.stats.rejected += 1
            raise Overloaded(self.max_concurrent)
        self.in_flight += 1  # one event loop: no lock needed between check and increment
        started = time.perf_counter()
        try:
            if self._task is None or self._task.done():
                self._queue = asyncio.Queue()
                self._task = asyncio.get_running_loop().create_task(self._run())
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            assert self._queue is not None
            self._queue.put_nowait(_Pending(x, future, started))
            outputs, batch_samples = await future
            self.stats.requests += 1
            self.stats.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            return outputs, batch_samples
        except Overloaded:
            raise
        except Exception:
            self.stats.failed += 1
            raise
        finally:
            self.in_flight -= 1

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None
        while True:
            first = carry or await queue.get()
            carry = None
            batch, rows = [first], len(first.x)
            deadline = loop.time() + self.timeout_s
            while rows < self.batch_size:
                left = deadline - loop.time()
                try:
                    item = queue.get_nowait() if left <= 0 else await asyncio.wait_for(
                        queue.get(), left)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if rows + len(item.x) > self.batch_size:
                    carry = item  # starts the next batch
                    break
                batch.append(item)
                rows += len(item.x)
            await self._compute(batch, rows)

    async def _compute(self, batch: list[_Pending], rows: int) -> None:
        x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
        try:
            outputs = await asyncio.to_thread(self.forward, x)
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self.stats.batches += 1
        self.stats.samples += rows
        self.stats.batch_sizes.append(rows)
        start = 0
        for p in batch:
            end = start + len(p.x)
            if not p.future.done():
                p.future.set_result(({k: v[start:end] for k, v in outputs.items()}, rows))
            start = end

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
