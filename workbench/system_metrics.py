"""System metrics of a training process: sampled every few seconds by a tracked run's flush
thread (``workbench.track``), and at every epoch of an engine run (``workbench.train.job``).

Names (all under ``system/``):

- ``system/cpu_percent``       this process, % of one core (psutil; > 100 with several threads)
- ``system/cpu_percent_host``  the whole machine, % of all cores
- ``system/rss_bytes``         this process's resident memory
- ``system/memory_percent``    the machine's memory in use, %
- ``system/gpu{i}/memory_allocated_bytes``, ``.../memory_reserved_bytes``,
  ``.../max_memory_allocated_bytes``   torch.cuda, when torch is already imported and has CUDA
- ``system/gpu{i}/utilization_percent``, ``.../memory_used_bytes``, ``.../power_watts``,
  ``.../temperature_c``        NVML, only when ``pynvml`` (nvidia-ml-py) is importable

Nothing here imports torch: a script that does not use it does not pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


class SystemSampler:
    """``sample()`` -> {name: value}; every source is optional and fails quietly."""

    def __init__(self) -> None:
        self._process: Any = None
        self._psutil: Any = None
        try:
            import psutil

            self._psutil = psutil
            self._process = psutil.Process()
            self._process.cpu_percent(None)  # the first reading only starts the interval
            psutil.cpu_percent(None)
        except Exception:  # not installed, or no /proc
            self._psutil = None
        self._nvml: Any = None
        self._nvml_handles: list[Any] = []
        with contextlib.suppress(Exception):
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._nvml_handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                                  for i in range(pynvml.nvmlDeviceGetCount())]

    def sample(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._psutil is not None:
            with contextlib.suppress(Exception):
                out["system/cpu_percent"] = float(self._process.cpu_percent(None))
                out["system/rss_bytes"] = float(self._process.memory_info().rss)
                out["system/cpu_percent_host"] = float(self._psutil.cpu_percent(None))
                out["system/memory_percent"] = float(self._psutil.virtual_memory().percent)
        torch = sys.modules.get("torch")
        if torch is not None:
            with contextlib.suppress(Exception):
                cuda = torch.cuda
                if cuda.is_available() and cuda.is_initialized():
                    for i in range(cuda.device_count()):
                        prefix = f"system/gpu{i}/"
                        out[prefix + "memory_allocated_bytes"] = float(cuda.memory_allocated(i))
                        out[prefix + "memory_reserved_bytes"] = float(cuda.memory_reserved(i))
                        out[prefix + "max_memory_allocated_bytes"] = float(
                            cuda.max_memory_allocated(i))
        if self._nvml is not None:
            nvml = self._nvml
            for i, handle in enumerate(self._nvml_handles):
                prefix = f"system/gpu{i}/"
                with contextlib.suppress(Exception):
                    out[prefix + "utilization_percent"] = float(
                        nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                with contextlib.suppress(Exception):
                    out[prefix + "memory_used_bytes"] = float(
                        nvml.nvmlDeviceGetMemoryInfo(handle).used)
                with contextlib.suppress(Exception):
                    out[prefix + "power_watts"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
                with contextlib.suppress(Exception):
                    out[prefix + "temperature_c"] = float(nvml.nvmlDeviceGetTemperature(
                        handle, nvml.NVML_TEMPERATURE_GPU))
        return out

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


def machine_load(gpus: int = 0) -> dict[str, str]:
    """This machine's load now, for the Devices table: ``{"cpu": "load 0.42/core · mem 37%",
    "cuda:0": "util 80% · mem 12.3 GiB", ...}`` (GPUs from NVML, when it is importable). The
    1-minute load average needs no sampling interval, unlike a CPU-percent reading."""
    import os

    out: dict[str, str] = {}
    with contextlib.suppress(Exception):
        import psutil

        per_core = psutil.getloadavg()[0] / (os.cpu_count() or 1)
        out["cpu"] = f"load {per_core:.2f}/core · mem {psutil.virtual_memory().percent:.0f}%"
    if gpus:
        sampler = SystemSampler()
        try:
            sample = sampler.sample()
        finally:
            sampler.close()
        for i in range(gpus):
            util = sample.get(f"system/gpu{i}/utilization_percent")
            used = sample.get(f"system/gpu{i}/memory_used_bytes")
            if util is not None and used is not None:
                out[f"cuda:{i}"] = f"util {util:.0f}% · mem {used / 2**30:.1f} GiB"
    return out
