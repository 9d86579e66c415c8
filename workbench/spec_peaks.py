"""Spec-sheet dense matmul peaks of known GPUs: the denominator of MFU (model FLOPs utilisation).

"Share of peak" divides by the *measured* matmul peak (``workbench.peaks``): what this process
can get. MFU divides by what the vendor's data sheet promises for the dtype the matmuls run in
(fp32 on CUDA cores, tf32 or bf16 on tensor cores), dense -- the "with sparsity" figures are
twice these. A GPU that is not in the table, or a MIG slice of one (a fraction of the chip),
gets no MFU: a guessed denominator would be a made-up figure.

Figures: NVIDIA's data sheets (H100/H200 SXM and PCIe/NVL, A100, A10, L4, L40S) and the Ada
whitepaper (RTX 4090), TFLOPS.
"""

from __future__ import annotations

import re
from typing import Any

MATMUL_DTYPES = ("fp32", "tf32", "bf16")

# (pattern on torch.cuda.get_device_name, {dtype: dense TFLOPS}); the first match wins, so
# the specific variants come before the family.
_SPECS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"\bH100\b.*\bPCIe\b", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    (r"\bH100\b.*\bNVL\b", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    (r"\bH100\b.*(\bSXM|HBM3)", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    (r"\bH200\b.*\bNVL\b", {"fp32": 60.0, "tf32": 417.5, "bf16": 835.5}),
    (r"\bH200\b", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    (r"\bA100\b", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
    (r"\bL40S\b", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05}),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0}),
    (r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0}),
    (r"\bRTX 4090\b", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2}),
)


def spec_peak_tflops(gpu_name: str, dtype: str) -> float | None:
    """The dense spec-sheet peak of ``gpu_name`` (as ``torch.cuda.get_device_name`` says it)
    for matmuls in ``dtype`` (fp32 | tf32 | bf16); None for an unknown GPU or a MIG slice."""
    if dtype not in MATMUL_DTYPES:
        raise ValueError(f"dtype: one of {', '.join(MATMUL_DTYPES)}, got {dtype!r}")
    if re.search(r"\bMIG\b", gpu_name):
        return None
    for pattern, peaks in _SPECS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return peaks[dtype]
    return None


def matmul_dtype(param_dtype: Any = None) -> str:
    """The dtype CUDA matmuls of parameters of ``param_dtype`` run in: bf16/fp16 weights on
    tensor cores (counted as bf16: the same rate on every GPU listed), float32 weights as tf32
    when torch allows TF32 matmuls (``torch.backends.cuda.matmul.allow_tf32``, i.e.
    ``set_float32_matmul_precision("high")``), else fp32."""
    import torch

    dtype = param_dtype if param_dtype is not None else torch.float32
    if dtype in (torch.bfloat16, torch.float16):
        return "bf16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def mfu_metrics(device: Any, achieved_tflops: float | None,
                param_dtype: Any = None) -> dict[str, Any]:
    """``{"mfu", "spec_peak_tflops", "matmul_dtype"}`` of a CUDA ``device`` whose GPU is known;
    ``{}`` on CPU, for an unknown GPU or without an achieved figure."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda" or not achieved_tflops:
        return {}
    dtype = matmul_dtype(param_dtype)
    spec = spec_peak_tflops(torch.cuda.get_device_name(dev), dtype)
    if spec is None:
        return {}
    return {"mfu": achieved_tflops / spec, "spec_peak_tflops": spec, "matmul_dtype": dtype}
