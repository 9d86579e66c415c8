"""The matmul peak of each local device, kept in the home: what "share of peak" divides by.

One probe at server start on a busy 2-core machine measured anything from 2 % to 90 % of what
the cores can do (whatever else ran during those 0.2 s), so a share of peak read 216 %. Here:

- a probe is several short timed bursts at a compute-bound size; the **maximum** counts (other
  work only ever lowers a burst: the fastest one is the closest to the device's capability);
- the peak is **stored** in ``$WORKBENCH_HOME/peaks.json`` with the time it was measured, per
  device and CPU thread count, and a new measurement only raises it (a later, quieter probe is
  more truthful; a busier one says nothing new);
- an **achieved** figure above the peak proves the peak low: it is measured again, and the
  stored peak becomes at least the achieved figure -- so a share of peak never passes 100 %.

(``workbench.devices`` measures; it stays torch-only because it is also shipped to nodes.)
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import get_settings

PEAKS_FILE = "peaks.json"
_lock = threading.Lock()


@dataclass(frozen=True)
class Peak:
    tflops: float
    measured_at: float  # seconds since the epoch
    source: str  # "probe" | "achieved" (a run went faster than the probe had seen)


def device_key(device: str) -> str:
    """Peaks differ by device and, on CPU, by the number of threads torch uses."""
    import torch

    from .devices import resolve_device

    resolved = resolve_device(device)
    return f"cpu/{torch.get_num_threads()}-threads" if resolved == "cpu" else resolved


def _path() -> Path:
    return get_settings().home / PEAKS_FILE


def _load() -> dict[str, Peak]:
    try:
        raw = json.loads(_path().read_text())
        return {k: Peak(**v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError):
        return {}


def _save(peaks: dict[str, Peak]) -> None:
    path = _path()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{PEAKS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in peaks.items()}, indent=1))
        tmp.replace(path)


def stored(device: str) -> Peak | None:
    """The stored peak of ``device`` (None before its first probe)."""
    return _load().get(device_key(device))


def _raise_to(device: str, tflops: float, source: str) -> Peak:
    with _lock:
        peaks = _load()
        key = device_key(device)
        current = peaks.get(key)
        if current is None or tflops > current.tflops:
            peaks[key] = current = Peak(float(tflops), time.time(), source)
            _save(peaks)
        return current


def measure(device: str) -> Peak:
    """Probe ``device`` now and store the result if it is a new high; returns the stored peak."""
    from .devices import probe_peak_tflops

    return _raise_to(device, probe_peak_tflops(device), "probe")


def peak(device: str) -> float:
    """The stored peak of ``device``, probing once per process (results only raise it)."""
    return _measured_once(device).tflops


_probed: dict[str, Peak] = {}


def _measured_once(device: str) -> Peak:
    key = device_key(device)
    if key not in _probed:
        _probed[key] = measure(device)
    return stored(device) or _probed[key]


def observe(device: str, achieved: float | None, *, probe: bool = True) -> float:
    """The peak to divide ``achieved`` by: if the run went faster than the stored peak, probe
    again (unless ``probe`` is false: a UI thread must not block) and keep at least
    ``achieved`` -- so the share this gives never exceeds 100 %."""
    current = peak(device)
    if achieved is None or achieved <= current:
        return current
    if probe:
        measure(device)
    return _raise_to(device, achieved, "achieved").tflops


def share_of_peak(device: str, achieved: float | None) -> float | None:
    """``achieved`` as a share of the stored peak, never above 1 (an achieved figure above it
    raises the stored peak); None before the device's first probe. Never probes: a training
    loop calls this every epoch."""
    current = stored(device)
    if current is None or achieved is None or current.tflops <= 0:
        return None
    if achieved > current.tflops:
        current = _raise_to(device, achieved, "achieved")
    return achieved / current.tflops
