"""Capabilities of a node, measured ON the node: a small snippet runs in a fresh kernel there.

It reports the GPU (model, memory, compute capability; None without CUDA), CPU count, torch and
workbench versions, and a ``performance_score``: achieved float32 matmul TFLOPS from
``workbench.devices.measure_peak_tflops``. The measuring code is shipped as source with the
snippet, so every node is measured the same way, whether or not (or whichever version of)
workbench is installed there.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..executors.remote_kernel import JupyterServerClient, run_snippet

PROBE_MIME = "application/vnd.nn-workbench.probe+json"

_SNIPPET = '''
def __nn_workbench_probe(devices_src, mime, seconds):
    import os, platform, sys
    from IPython.display import publish_display_data
    info = {"cpu_count": os.cpu_count(), "python_version": platform.python_version(),
            "platform": platform.platform(), "torch_version": None, "workbench_version": None,
            "gpu_info": None, "performance_score": None, "performance_device": None,
            "errors": []}
    try:
        from importlib.metadata import version
        info["workbench_version"] = version("nn-workbench")
    except Exception:
        pass
    try:
        import torch
        info["torch_version"] = torch.__version__
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu_info"] = {"model": p.name, "memory": f"{p.total_memory / 2**30:.0f}GB",
                                "memory_bytes": p.total_memory,
                                "compute_capability": f"{p.major}.{p.minor}",
                                "count": torch.cuda.device_count()}
        namespace = {"__name__": "nn_workbench_devices_probe"}
        exec(compile(devices_src, "workbench/devices.py", "exec"), namespace)
        info["performance_device"] = "cuda" if torch.cuda.is_available() else "cpu"
        info["performance_score"] = namespace["measure_peak_tflops"]("auto", seconds)
    except Exception as exc:
        info["errors"].append(f"{type(exc).__name__}: {exc}")
    publish_display_data({mime: info})


try:
    __nn_workbench_probe(__SRC__, __MIME__, __SECONDS__)
finally:
    del __nn_workbench_probe
'''


def probe_code(seconds: float = 0.2) -> str:
    from .. import devices  # imports torch: only when a probe is built

    source = inspect.getsource(devices)
    return (
        _SNIPPET.replace("__SECONDS__", repr(float(seconds)))
        .replace("__MIME__", repr(PROBE_MIME))
        .replace("__SRC__", repr(source))  # last: the source itself is never scanned again
    )


def capabilities_of(info: dict[str, Any]) -> list[str]:
    """What a node can do: ``kernel`` always, ``train`` with torch + workbench, ``cuda``."""
    caps = ["kernel"]
    if info.get("torch_version") and info.get("workbench_version"):
        caps.append("train")
    if info.get("gpu_info"):
        caps.append("cuda")
    return caps


def probe_node(
    client: JupyterServerClient, *, seconds: float = 0.2, timeout: float = 180.0
) -> dict[str, Any]:
    """Run the probe in a fresh kernel on the node; returns the snippet's report plus
    ``capabilities``. Raises ``NodeError`` subclasses when the node cannot run it."""
    info = run_snippet(client, probe_code(seconds), mime=PROBE_MIME, timeout=timeout)
    score = info.get("performance_score")
    if isinstance(score, (int, float)):
        info["performance_score"] = round(float(score), 4)
    info["capabilities"] = capabilities_of(info)
    return info
