"""Phase timers: forward and backward time, without a host sync on the hot path.

On CPU, kernels run synchronously, so ``time.perf_counter`` around each phase is the truth.
On CUDA, work is queued asynchronously: we record CUDA events between phases and read the
elapsed times once per epoch, after a single synchronize.
"""

from __future__ import annotations

import time

import torch


class CpuPhaseTimer:
    """Accumulates seconds per phase with perf counters."""

    def __init__(self) -> None:
        self.forward_s = 0.0
        self.backward_s = 0.0
        self._t = 0.0

    def start(self) -> None:
        self._t = time.perf_counter()

    def mark_forward(self) -> None:
        now = time.perf_counter()
        self.forward_s += now - self._t
        self._t = now

    def mark_backward(self) -> None:
        now = time.perf_counter()
        self.backward_s += now - self._t
        self._t = now

    def collect(self) -> tuple[float, float]:
        """(forward_s, backward_s) since the last collect."""
        out = (self.forward_s, self.backward_s)
        self.forward_s = self.backward_s = 0.0
        return out


class CudaPhaseTimer:
    """Records three CUDA events per step (start, after forward, after backward); the
    elapsed times are summed at ``collect`` after one synchronize."""

    def __init__(self) -> None:
        self._steps: list[tuple[torch.cuda.Event, torch.cuda.Event, torch.cuda.Event]] = []
        self._pool: list[torch.cuda.Event] = []
        self._current: list[torch.cuda.Event] = []

    def _event(self) -> torch.cuda.Event:
        event = self._pool.pop() if self._pool else torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self._current = [self._event()]

    def mark_forward(self) -> None:
        self._current.append(self._event())

    def mark_backward(self) -> None:
        self._current.append(self._event())
        self._steps.append(tuple(self._current))  # type: ignore[arg-type]

    def collect(self) -> tuple[float, float]:
        torch.cuda.synchronize()
        fwd = bwd = 0.0
        for start, mid, end in self._steps:
            fwd += start.elapsed_time(mid) / 1e3  # ms -> s
            bwd += mid.elapsed_time(end) / 1e3
            self._pool += [start, mid, end]
        self._steps = []
        return fwd, bwd


def phase_timer(device: torch.device) -> CpuPhaseTimer | CudaPhaseTimer:
    return CudaPhaseTimer() if device.type == "cuda" else CpuPhaseTimer()


def peak_memory_bytes(device: torch.device) -> int:
    """Peak device memory (CUDA allocator) or the process's peak resident set (CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
    except ImportError:  # pragma: no cover - Windows
        return 0
