"""Compute devices on this machine and their measured matmul peak.

The app predicts epoch times and shows achieved TFLOPS as a share of "the device's peak"; that
peak is *measured* here (float32 matmul bursts, the fastest counts), not read from a spec sheet,
so it reflects what this process can actually get (CPU threads, clocks, MIG slices).
``workbench.peaks`` keeps the peak in the home; the node probe ships this file's source to a node.
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
    """Achieved float32 matmul TFLOPS on ``device`` over about ``seconds`` (cached per device):
    the best of several short bursts (see :func:`probe_peak_tflops`)."""
    return _measure(resolve_device(device), float(seconds))


def probe_peak_tflops(device: str = "cpu", seconds: float = 1.0, bursts: int = 20) -> float:
    """A fresh probe: ``bursts`` timed bursts of matmuls over about ``seconds``, at a size that
    is compute-bound for the device; the fastest burst counts.

    On CPU a burst is timed by the CPU time this process got, spread over torch's threads, not
    by the wall clock: another busy process on the same cores takes wall time from the probe,
    not speed from the cores (measured on 2 shared cores: wall-clock probes ranged over 3x
    across server starts, CPU-time probes within 30 %)."""
    dev = torch.device(resolve_device(device))
    on_cpu = dev.type == "cpu"
    n = 1024 if on_cpu else 4096
    threads = max(1, torch.get_num_threads()) if on_cpu else 1
    best = 0.0
    with _lock, torch.no_grad():
        a = torch.randn(n, n, device=dev)
        b = torch.randn(n, n, device=dev)
        out = torch.empty(n, n, device=dev)
        torch.mm(a, b, out=out)  # warm-up: kernels, allocator, thread pool
        _sync(dev)
        for _ in range(max(1, bursts)):
            count, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
            while True:
                torch.mm(a, b, out=out)
                count += 1
                _sync(dev)
                wall = time.perf_counter() - wall0
                if wall >= seconds / max(1, bursts):
                    break
            # CPU: wall time the cores really worked for us = CPU time / threads (never more
            # than the wall time, which it equals on an idle machine).
            busy = min(wall, (time.process_time() - cpu0) / threads) if on_cpu else wall
            best = max(best, 2.0 * n**3 * count / max(busy, 1e-9) / 1e12)
    return best


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda:N"`` (current) or ``"cpu"``; ``"cuda"`` -> ``"cuda:N"``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return str(dev)


@cache
def _measure(device: str, seconds: float) -> float:
    return probe_peak_tflops(device, seconds)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
