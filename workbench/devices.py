"""Compute devices on this machine and their measured matmul peak.

The app predicts epoch times and shows achieved TFLOPS as a share of "the device's peak"; that
peak is *measured* here (a short float32 matmul probe), not read from a spec sheet, so it reflects
what this process can actually get (CPU threads shared with other work, clocks, MIG slices).
The result is cached per device for the life of the process; the node registry reuses it.
"""

from __future__ import annotations

import threading
import time
from functools import cache

import torch

_lock = threading.Lock()  # one probe at a time: two concurrent probes would halve each other


def available_devices() -> list[str]:
    """``["cpu", "cuda:0", ...]``: what a local run may be placed on."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def device_label(device: str) -> str:
    """A human label: ``"CPU (x86_64, 2 threads)"`` or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(dev)})"
    import platform

    return f"CPU ({platform.machine() or 'cpu'}, {torch.get_num_threads()} threads)"


def measure_peak_tflops(device: str = "cpu", seconds: float = 0.2) -> float:
    """Achieved float32 matmul TFLOPS on ``device`` over about ``seconds`` (cached per device).

    ``"auto"`` means CUDA when available. The first call pays ``seconds`` plus a warm-up; later
    calls return the cached number.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return _measure(str(dev), float(seconds))


@cache
def _measure(device: str, seconds: float) -> float:
    dev = torch.device(device)
    # Big enough to be compute-bound, small enough that one matmul is far below `seconds`.
    n = 4096 if dev.type == "cuda" else 512
    with _lock, torch.no_grad():
        a = torch.randn(n, n, device=dev)
        b = torch.randn(n, n, device=dev)
        out = torch.empty(n, n, device=dev)
        torch.mm(a, b, out=out)  # warm-up: kernels, allocator, thread pool
        _sync(dev)
        count, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            count += 1
            if count % 4 == 0:
                _sync(dev)
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
    return 2.0 * n**3 * count / elapsed / 1e12


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
