"""``Run``: one tracked training run -- a cheap ``log`` on the training thread, a background
thread that batches, sends, spools and samples system metrics.

``log`` appends one tuple to a deque (thread-safe, no lock, no I/O; about a microsecond). The
flush thread wakes every ``flush_interval`` seconds, or as soon as ``flush_points`` points are
waiting, turns what is queued into batches of at most ``max_batch`` points -- each with its own
``batch_id``, fixed once -- and posts them in order (``POST /api/runs/{id}/log-batch``). When
the owner cannot be reached (it restarts, it was killed, the network is down) a batch and every
later one go to the run's spool file (:mod:`workbench.track.spool`); the thread keeps trying
(finding the owner again through the front door: a restarted owner has a new address and
credential) and sends the spool in order before anything newer. A batch the owner stored but
whose answer was lost is sent again and stored once (its ``batch_id``). ``finish`` flushes,
waits for every batch to be delivered, and ends the run.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .spool import Spool

log = logging.getLogger("workbench.track")

FLUSH_INTERVAL_S = 0.5
FLUSH_POINTS = 5_000
MAX_BATCH = 10_000  # the server's limit per log-batch request
SYSTEM_INTERVAL_S = 5.0
FINISH_TIMEOUT_S = 300.0
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 5.0
_TERMINAL = {"succeeded", "failed", "cancelled"}
# Private keys of a queued entry (objects: no logged name can be equal to them).
_STEP, _TIME, _EPOCH = object(), object(), object()


class _Transient(Exception):
    """The owner could not take the request now (try again, maybe at a new address)."""


class _Refused(Exception):
    """The owner refused the request for good (the batch is dropped)."""

    def __init__(self, status: int, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _classify(exc: Exception) -> Exception:
    import httpx

    from ..client import ApiError

    if isinstance(exc, ApiError):
        if exc.status in (401, 408, 429) or exc.status >= 500:
            return _Transient(str(exc))  # 401: a restarted owner has a new credential
        return _Refused(exc.status, exc.detail)
    if isinstance(exc, (httpx.TransportError, OSError, RuntimeError)):
        return _Transient(str(exc) or type(exc).__name__)
    return exc


def _flatten(data: Mapping[Any, Any], prefix: str, out: list[tuple[str, Any]]) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, name + "/", out)
        else:
            out.append((name, value))


def _points(entry: dict[str, Any]) -> int:
    """The number of points of a spool entry (``columns`` or ``metrics``)."""
    if entry.get("columns") is not None:
        return len(entry["columns"].get("key") or ())
    return len(entry.get("metrics") or ())


def _number(value: Any) -> float | None:
    kind = type(value)
    if kind is float or kind is int or kind is bool:
        return float(value)
    try:
        return float(value)  # numpy scalars, one-element tensors (.item()), Decimal, ...
    except (TypeError, ValueError, RuntimeError):
        return None


class Run:
    """A tracked run. Made by :func:`workbench.track.init`; use ``log``, then ``finish`` (or
    ``with init(...) as run:``)."""

    def __init__(self, client: Any, record: dict[str, Any], *,
                 reconnect: Callable[[bool], Any] | None = None,
                 flush_interval: float = FLUSH_INTERVAL_S, flush_points: int = FLUSH_POINTS,
                 max_batch: int = MAX_BATCH, system_interval: float | None = SYSTEM_INTERVAL_S,
                 home: Path | None = None):
        self.client = client
        self.record = record
        self.run_id: str = record["run_id"]
        self.name: str | None = record.get("name")
        self.config: dict[str, Any] = dict(record.get("config") or {})
        self._reconnect = reconnect
        self._flush_interval = max(0.01, float(flush_interval))
        self._flush_points = max(1, int(flush_points))
        self._max_batch = max(1, min(int(max_batch), MAX_BATCH))
        self._queue: collections.deque[dict[Any, Any]] = collections.deque()
        self._append = self._queue.append
        self._time = time.time
        self._last_step = -1
        self._queued_points = 0  # written by log() only
        self._taken_points = 0  # written by the flush thread only
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._batch_prefix = f"{uuid.uuid4().hex[:16]}-{os.getpid()}"
        self._batch_seq = 0
        self._spool = Spool.for_run(self.run_id, home)
        self._retry_at = 0.0
        self._retry_delay = _RETRY_MIN_S
        self._offline_since: float | None = None
        self._need_reconnect = False
        self._finished = False
        self.state: str = "running"
        self.ended_remotely: str | None = None  # why the owner refused more points (409)
        self.sent_points = 0
        self.sent_batches = 0
        self.spooled_batches = 0
        self.dropped_points = 0  # non-finite or non-numeric values, refused batches
        self._warned: set[str] = set()
        self._system = None
        self._system_interval = system_interval
        self._next_sample = 0.0
        if system_interval:
            from ..system_metrics import SystemSampler

            self._system = SystemSampler()
        self._watches: list[Any] = []
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"workbench-track-{self.run_id[:10]}")
        self._thread.start()

    # ---- the training thread -------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, *,
            epoch: int | None = None) -> None:
        """Queue ``{name: number}`` at ``step`` (default: one more than the last step logged,
        from 0). Values may be numpy scalars or one-element tensors (read off the training
        thread); nested dicts become ``outer/inner`` names; NaN and infinities are dropped.
        Costs about a microsecond: nothing is sent from here."""
        if self._finished:
            raise RuntimeError(f"run {self.run_id} is finished; start another with init()")
        if step is None:
            step = self._last_step + 1
        self._last_step = step
        # One dict per call, step and time under private keys: a dict of plain numbers is not
        # tracked by the garbage collector (a tuple would be, and the GC's passes over a long
        # queue would cost more than the call itself).
        entry: dict[Any, Any] = dict(data)
        entry[_STEP] = step
        entry[_TIME] = self._time()
        if epoch is not None:
            entry[_EPOCH] = epoch
        self._append(entry)
        self._queued_points += len(data)
        if self._queued_points - self._taken_points >= self._flush_points:
            self._wake.set()

    def log_at(self, data: Mapping[str, Any], step: int | None = None, *,
               epoch: int | None = None) -> None:
        """``log`` without moving the step counter (at the current step by default): for
        metrics that accompany the training ones (system metrics, ``watch``)."""
        entry: dict[Any, Any] = dict(data)
        entry[_STEP] = max(self._last_step, 0) if step is None else step
        entry[_TIME] = self._time()
        if epoch is not None:
            entry[_EPOCH] = epoch
        self._append(entry)
        self._queued_points += len(data)

    @property
    def step(self) -> int:
        """The last step logged (-1 before the first ``log``)."""
        return self._last_step

    def watch(self, model: Any, **options: Any) -> Any:
        """Hooks on a torch module logging TFLOPS and per-layer norms (see :mod:`.watch`)."""
        from .watch import Watch

        handle = Watch(self, model, **options)
        self._watches.append(handle)
        return handle

    # ---- finishing -------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Send what is queued now and wait until it is delivered (or spooled, if the owner
        is away): True when nothing is left in memory."""
        target = self._queued_points
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._taken_points < target or self._queue:
            if not self._thread.is_alive():
                return False
            if deadline is not None and time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.01)
        with self._lock:  # the flush thread holds it while it sends
            return True

    def finish(self, state: str = "succeeded", *, error: str | None = None,
               timeout: float | None = FINISH_TIMEOUT_S) -> dict[str, Any]:
        """Flush, wait until every point is delivered, and end the run (``succeeded``,
        ``failed`` with ``error``, or ``cancelled``). If the owner stays unreachable for
        ``timeout`` seconds the rest stays in the spool (sent later by
        ``workbench.track.sync()``). Returns the run as the owner answers it (or as last known).
        Idempotent."""
        if state not in _TERMINAL:
            raise ValueError(f"state: one of {', '.join(sorted(_TERMINAL))}, got {state!r}")
        with self._lock:
            if self._finished:
                return self.record
            self._finished = True
        for handle in self._watches:
            handle.remove()
        self._sample_system()  # one last sample, so even a short run has one
        self._finish_args = {"state": state, "error": error}
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        if self._system is not None:
            self._system.close()
        _forget(self)
        return self.record

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if kind is None:
            self.finish()
        elif issubclass(kind, Exception):
            self.finish("failed", error=f"{kind.__name__}: {exc}")
        else:  # KeyboardInterrupt, SystemExit
            self.finish("cancelled", error=kind.__name__)

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, name={self.name!r}, state={self.state!r})"

    # ---- the flush thread ------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                stopping = self._stopping.is_set()
                if not stopping:
                    self._wake.wait(self._flush_interval)
                    self._wake.clear()
                now = time.monotonic()
                if self._system is not None and now >= self._next_sample and not stopping:
                    self._next_sample = now + float(self._system_interval or 0)
                    self._sample_system()
                with self._lock:
                    self._drain_spool()
                    self._flush_queue()
                if stopping and not self._queue:
                    self._final()
                    return
        except Exception:  # never let a bug here pass silently; the training goes on
            log.exception("workbench.track: the flush thread of %s stopped", self.run_id)

    def _sample_system(self) -> None:
        if self._system is None:
            return
        try:
            sample = self._system.sample()
        except Exception:
            return
        if sample:
            self.log_at(sample)

    def _take(self) -> dict[str, list[Any]]:
        """Everything queued now, as log-batch columns (key, value, step, timestamp, epoch)."""
        keys: list[str] = []
        values: list[float] = []
        steps: list[int] = []
        stamps: list[float] = []
        epochs: list[int | None] = []
        any_epoch = False
        popleft = self._queue.popleft
        taken = 0
        for _ in range(len(self._queue)):
            entry = popleft()
            step = int(entry.pop(_STEP))
            stamp = entry.pop(_TIME)
            epoch = entry.pop(_EPOCH, None)
            if epoch is not None:
                epoch, any_epoch = int(epoch), True
            taken += len(entry)
            for key, value in entry.items():
                kind = type(value)
                if (kind is float or kind is int) and type(key) is str:
                    number = float(value)
                    if number - number == 0.0:  # finite (inf - inf and nan - nan are nan)
                        keys.append(key)
                        values.append(number)
                        steps.append(step)
                        stamps.append(stamp)
                        epochs.append(epoch)
                        continue
                for name, item in self._slow_items(key, value):
                    keys.append(name)
                    values.append(item)
                    steps.append(step)
                    stamps.append(stamp)
                    epochs.append(epoch)
        self._taken_points += taken
        columns: dict[str, list[Any]] = {"key": keys, "value": values, "step": steps,
                                         "timestamp": stamps}
        if any_epoch:
            columns["epoch"] = epochs
        return columns

    def _slow_items(self, key: Any, value: Any) -> list[tuple[str, float]]:
        """A value that is not a plain finite number (nested dicts, numpy, tensors, NaN) as
        (name, number) pairs; what cannot be stored is dropped, with one warning per name."""
        if isinstance(value, Mapping):
            items: list[tuple[str, Any]] = []
            _flatten(value, f"{key}/", items)
        else:
            items = [(str(key), value)]
        out = []
        for name, item in items:
            number = _number(item)
            if number is None or not math.isfinite(number):
                self._drop_value(name, item, number)
            else:
                out.append((name, number))
        return out

    def _drop_value(self, key: str, value: Any, number: float | None) -> None:
        self.dropped_points += 1
        if key not in self._warned:
            self._warned.add(key)
            why = "not a number" if number is None else "not finite"
            log.warning("workbench.track: %s=%r is %s; such values are not stored", key,
                        value, why)

    def _flush_queue(self) -> None:
        columns = self._take()
        total = len(columns["key"])
        for start in range(0, total, self._max_batch):
            self._batch_seq += 1
            end = start + self._max_batch
            part = columns if start == 0 and end >= total else \
                {name: column[start:end] for name, column in columns.items()}
            self._deliver({"run_id": self.run_id,
                           "batch_id": f"{self._batch_prefix}-{self._batch_seq}",
                           "columns": part})

    def _deliver(self, entry: dict[str, Any]) -> None:
        if self.ended_remotely is not None:
            self.dropped_points += _points(entry)
            return
        # Keep the order: while older batches wait in the spool, newer ones queue behind them.
        if self._spool.pending or not self._ready():
            self._to_spool(entry)
            return
        try:
            self._send(entry)
        except _Transient as exc:
            self._went_offline(exc)
            self._to_spool(entry)

    def _ready(self, start_owner: bool = False) -> bool:
        """Whether a send may be tried now: not inside a retry delay, and (after a failure)
        connected to the owner again -- found anew through the front door."""
        if time.monotonic() < self._retry_at:
            return False
        if self._need_reconnect and self._reconnect is not None:
            try:
                client = self._reconnect(start_owner)
            except Exception as exc:
                self._went_offline(exc)
                return False
            old, self.client = self.client, client
            if old is not client:
                try:
                    old.close()
                except Exception:
                    pass
        self._need_reconnect = False
        return True

    def _to_spool(self, entry: dict[str, Any]) -> None:
        self._spool.append(entry)
        self.spooled_batches += 1

    def _send(self, entry: dict[str, Any]) -> None:
        """Post one spool entry (a batch or the finish); _Transient when it should be retried."""
        try:
            if "finish" in entry:
                finish = entry["finish"]
                self.record = self.client.finish_run(self.run_id, finish.get("state", "succeeded"),
                                                     error=finish.get("error"))
                self.state = self.record.get("state", self.state)
            else:
                self.client.log_batch(self.run_id, entry.get("metrics"),
                                      columns=entry.get("columns"), batch_id=entry["batch_id"])
                self.sent_points += _points(entry)
                self.sent_batches += 1
        except Exception as exc:
            classified = _classify(exc)
            if isinstance(classified, _Refused):
                self._refused(entry, classified)
                return
            if isinstance(classified, _Transient):
                self._need_reconnect = True
                raise classified from None
            raise
        self._retry_delay = _RETRY_MIN_S

    def _refused(self, entry: dict[str, Any], exc: _Refused) -> None:
        if "finish" in entry:
            if exc.status == 409:  # ended already (cancelled from the app, say)
                self._refresh_record()
            else:
                log.warning("workbench.track: the owner refused to finish %s: %s", self.run_id,
                            exc)
            return
        self.dropped_points += _points(entry)
        if exc.status == 409:
            self.ended_remotely = exc.detail
            self._refresh_record()
            log.warning("workbench.track: run %s takes no more metrics (%s); further points "
                        "are dropped", self.run_id, exc.detail)
        else:
            log.warning("workbench.track: the owner refused a batch of %s: %s", self.run_id, exc)

    def _refresh_record(self) -> None:
        try:
            self.record = self.client.tracked_run(self.run_id)
            self.state = self.record.get("state", self.state)
        except Exception:
            pass

    def _went_offline(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._offline_since is None:
            self._offline_since = now
            log.warning("workbench.track: cannot reach the workbench owner (%s); points of %s "
                        "are kept in %s until it is back", exc, self.run_id, self._spool.path)
        self._retry_at = now + self._retry_delay
        self._retry_delay = min(_RETRY_MAX_S, self._retry_delay * 2)

    def _drain_spool(self, *, start_owner: bool = False) -> bool:
        """Send spooled entries in order; True when the spool is empty."""
        if not self._spool.pending:
            return True
        if not self._ready(start_owner):
            return False
        for offset, entry in self._spool.entries():
            try:
                self._send(entry)
            except _Transient as exc:
                self._went_offline(exc)
                return False
            self._spool.mark_sent(offset)
        self._spool.clear()
        if self._offline_since is not None:
            log.warning("workbench.track: the owner is back; %s's spooled points are delivered",
                        self.run_id)
            self._offline_since = None
        return True

    def _final(self) -> None:
        """After the last flush: deliver the spool (retrying until the deadline), then end
        the run; whatever cannot be delivered stays in the spool with the finish."""
        finish = {"run_id": self.run_id, "finish": self._finish_args}
        offline_from = time.monotonic()
        while True:
            with self._lock:
                # After a while, let the front door start an owner (a dead `workbench serve`
                # that nobody restarts must not keep the points away forever).
                started = time.monotonic() - offline_from > 10.0
                if self._drain_spool(start_owner=started) and self._ready(started):
                    try:
                        self._send(finish)
                        self._spool.close()
                        return
                    except _Transient as exc:
                        self._went_offline(exc)
            if self._deadline is not None and time.monotonic() > self._deadline:
                self._to_spool(finish)
                self._spool.close()
                log.warning("workbench.track: gave up waiting for the owner; %d entries of %s "
                            "stay in %s (workbench.track.sync() sends them)",
                            self._spool.pending, self.run_id, self._spool.path)
                return
            time.sleep(max(0.05, min(1.0, self._retry_at - time.monotonic())))


# The runs of this process not yet finished (for atexit).
_live: set[Run] = set()
_live_lock = threading.Lock()


def _remember(run: Run) -> None:
    with _live_lock:
        _live.add(run)


def _forget(run: Run) -> None:
    with _live_lock:
        _live.discard(run)


def live_runs() -> list[Run]:
    with _live_lock:
        return list(_live)
