"""How much of the device an epoch used: share of the measured peak and, on known GPUs, MFU.

Computed in the training process (it knows its GPU and the dtype its matmuls run in), so the
figures travel as epoch metrics to every face: ``GET /api/runs/{id}`` metrics, the CLI
summary, the app's Train view.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import peaks
from ..spec_peaks import mfu_metrics


def utilisation(device: torch.device, total_tflops: float | None) -> dict[str, Any]:
    """``share_of_peak`` (of the stored measured peak, when there is one) and, for a CUDA
    device of known spec, ``mfu``, ``spec_peak_tflops`` and ``matmul_dtype``."""
    out: dict[str, Any] = {}
    share = peaks.share_of_peak(str(device), total_tflops)
    if share is not None:
        out["share_of_peak"] = share
    out.update(mfu_metrics(device, total_tflops))
    return out
