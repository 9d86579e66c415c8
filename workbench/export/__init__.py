"""A trained model as a file other runtimes load: ONNX (``onnxruntime``, TensorRT, browsers)
or TorchScript (``torch.jit.load`` without this package).

Both take what the inference API takes: flat rows ``(batch, input_size)`` of standardised
values, any batch size, and give logits (a final softmax layer is left out, as for
``/api/infer``'s logits). A CNN's first module reshapes the rows to ``[C, H, W]``.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import torch
from torch import nn

from ..model import build_model, load_weights, logits_module
from ..spec import Network

Format = Literal["onnx", "torchscript"]
FORMATS: dict[str, tuple[str, str]] = {  # format -> (file suffix, media type)
    "onnx": (".onnx", "application/onnx"),
    "torchscript": (".pt", "application/octet-stream"),
}
ONNX_OPSET = 17


def inference_module(architecture: Network, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The trained logits network in eval mode (dropout off, batchnorm running statistics)."""
    model = load_weights(build_model(architecture), tensors)
    return logits_module(model).eval()


def to_onnx(architecture: Network, tensors: dict[str, torch.Tensor]) -> bytes:
    net = inference_module(architecture, tensors)
    example = torch.zeros(2, architecture.input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buffer, input_names=["input"],
                          output_names=["logits"], opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buffer.getvalue()


def to_torchscript(architecture: Network, tensors: dict[str, torch.Tensor]) -> bytes:
    net = inference_module(architecture, tensors)
    with torch.no_grad():
        traced = torch.jit.trace(net, torch.zeros(2, architecture.input_size))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()


def export(architecture: Network, tensors: dict[str, torch.Tensor], fmt: str) -> bytes:
    if fmt == "onnx":
        return to_onnx(architecture, tensors)
    if fmt == "torchscript":
        return to_torchscript(architecture, tensors)
    raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
