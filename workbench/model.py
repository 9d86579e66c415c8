"""Architecture -> torch model, weights <-> Parameters JSON / safetensors, and cost figures.

Weight orientation: ``W`` is ``[out][in]``, exactly ``torch.nn.Linear.weight``, so a layer
computes ``y = x @ W.T + b``. JSON floats carry float32 values exactly (float32 -> float64 is
exact and Python prints the shortest repr that parses back to the same float64), so the
Parameters round trip is bit-exact.

Shapes, parameter counts and FLOPs are computed from the spec alone (no torch), so the app can
show them live while a user edits the architecture.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .netspec import NetSpec
from .spec import Architecture, Network, Parameters

_ACTIVATION_MODULES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
                       "gelu": nn.GELU, "silu": nn.SiLU}


class InputShape(nn.Module):
    """Reshapes flat rows ``(B, C*H*W)`` (how datasets and the inference API hold samples) to
    ``(B, C, H, W)``; a view, so it costs nothing, and already-shaped input passes through."""

    def __init__(self, shape: list[int]):
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((-1, *self.shape))

    def extra_repr(self) -> str:
        return str(list(self.shape))


def build_model(architecture: Network) -> nn.Sequential:
    """One module per spec layer, named by its spec index: ``model.get_submodule(str(i))``
    is ``architecture.layers[i]`` and its weights are ``"{i}.weight"`` (a native spec's model
    starts with an :class:`InputShape` named ``input``)."""
    if isinstance(architecture, NetSpec):
        return build_net(architecture)
    modules: list[nn.Module] = []
    for layer in architecture.layers:
        if layer.type == "linear":
            modules.append(nn.Linear(layer.in_, layer.out))  # (B, in) -> (B, out)
        elif layer.type == "softmax":
            modules.append(nn.Softmax(dim=1))
        elif layer.type == "dropout":
            modules.append(nn.Dropout(layer.p))
        else:
            modules.append(_ACTIVATION_MODULES[layer.type]())
    return nn.Sequential(*modules)


def build_net(spec: NetSpec) -> nn.Sequential:
    modules: OrderedDict[str, nn.Module] = OrderedDict(input=InputShape(spec.input_shape))
    for info, layer in zip(spec.layer_infos, spec.layers):
        modules[str(info.index)] = _net_module(layer, info.input_shape)
    return nn.Sequential(modules)


def _net_module(layer: Any, shape: tuple[int, ...]) -> nn.Module:
    kind = layer.type
    if kind == "conv2d":
        return nn.Conv2d(shape[0], layer.out, layer.kernel, stride=layer.stride or 1,
                         padding=layer.padding or 0)
    if kind in ("maxpool2d", "avgpool2d"):
        pool = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
        return pool(layer.kernel, stride=layer.stride or layer.kernel, padding=layer.padding or 0)
    if kind == "linear":
        return nn.Linear(shape[0], layer.out)
    if kind == "flatten":
        return nn.Flatten()
    if kind == "batchnorm1d":
        return nn.BatchNorm1d(shape[0])
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(shape[0])
    if kind == "layernorm":  # over the whole sample, as the spec's parameter count says
        return nn.LayerNorm(list(shape))
    if kind == "dropout":
        return nn.Dropout(layer.p)
    if kind == "softmax":
        return nn.Softmax(dim=1)
    return _ACTIVATION_MODULES[kind]()


def logits_module(model: nn.Sequential) -> nn.Module:
    """The part of the model that produces logits: a final softmax is left out, because
    cross-entropy wants logits and softmax-then-log is numerically poor."""
    if len(model) and isinstance(model[-1], nn.Softmax):
        return model[:-1]
    return model


def linear_layer_names(architecture: Network) -> dict[str, int]:
    """Cortex-style names for freezing: ``{"layer1": 0, "layer2": 2, ...}`` (1-based over the
    linear layers -- and a native spec's conv2d layers -- mapped to the spec index)."""
    names = {}
    for i, layer in enumerate(architecture.layers):
        if layer.type in ("linear", "conv2d"):
            names[f"layer{len(names) + 1}"] = i
    return names


# ---- weights ---------------------------------------------------------------------------------
def state_tensors(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """Flat ``{"0.weight": ..., "0.bias": ...}`` float32 CPU tensors (safetensors keys)."""
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}


def to_safetensors(model_or_tensors: nn.Module | dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    tensors = (
        state_tensors(model_or_tensors)
        if isinstance(model_or_tensors, nn.Module)
        else model_or_tensors
    )
    return save(tensors)


def _safetensors_save_fallback(tensors: dict[str, torch.Tensor]) -> bytes:
    """safetensors' documented byte layout, written by hand only when the package is absent
    (a bare GPU box with just torch): 8-byte little-endian header size, JSON header, data."""
    import json

    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name, tensor in sorted(tensors.items()):
        data = tensor.numpy().astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + b"".join(chunks)


def encode_weights(model: nn.Module) -> str:
    """Trained weights as base64 safetensors: how they travel inside a ``run.completed``
    event across processes and kernels."""
    tensors = state_tensors(model)
    try:
        blob = to_safetensors(tensors)
    except ImportError:
        blob = _safetensors_save_fallback(tensors)
    return base64.b64encode(blob).decode("ascii")


def from_safetensors(blob: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(blob)


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    model.load_state_dict(tensors, strict=True)
    return model


def weights_size_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of raw float32 weights (the ``size_bytes`` of the MNIST MLP API)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def to_parameters(architecture: Network, tensors: dict[str, torch.Tensor]) -> Parameters:
    if isinstance(architecture, NetSpec):
        raise ValueError("a native-spec (input_shape) model has no MNIST MLP API parameters "
                         "JSON; export it as ONNX or TorchScript instead")
    layers: list[dict[str, Any]] = []
    for i, layer in enumerate(architecture.layers):
        if layer.type == "linear":
            layers.append(
                {
                    "type": "linear",
                    "W": tensors[f"{i}.weight"].numpy().astype(np.float64).tolist(),
                    "b": tensors[f"{i}.bias"].numpy().astype(np.float64).tolist(),
                }
            )
        elif layer.type == "dropout":
            layers.append({"type": "dropout", "p": layer.p})
        else:
            layers.append({"type": layer.type})
    return Parameters.model_validate({"layers": layers})


def from_parameters(architecture: Architecture, parameters: Parameters) -> dict[str, torch.Tensor]:
    """Parameters JSON -> state tensors, after checking every shape against the architecture."""
    parameters.check_against(architecture)
    tensors = {}
    for i, p in enumerate(parameters.layers):
        if p.type == "linear":
            tensors[f"{i}.weight"] = torch.tensor(p.W, dtype=torch.float32)
            tensors[f"{i}.bias"] = torch.tensor(p.b, dtype=torch.float32)
    return tensors


# ---- cost figures from the spec ----------------------------------------------------------------
@dataclass(frozen=True)
class LayerCost:
    index: int
    type: str
    output_shape: tuple[int, ...]  # per sample, e.g. (128,)
    params: int
    forward_flops: int  # per sample
    backward_flops: int  # per sample


def layer_costs(architecture: Network) -> list[LayerCost]:
    """Per-layer output shape, parameter count and matmul FLOPs per sample.

    FLOPs are counted the way ``torch.utils.flop_counter`` counts them (matmuls only, 2 per
    multiply-add): forward ``2*in*out``; backward ``2*in*out`` for the weight gradient plus
    ``2*in*out`` for the input gradient, except at the first linear layer, whose input needs
    no gradient. A native spec's costs come from ``workbench.netspec.infer_layers``, which counts
    convolutions the same way.
    """
    if isinstance(architecture, NetSpec):
        return [LayerCost(x.index, x.type, x.output_shape, x.params, x.forward_flops,
                          x.backward_flops) for x in architecture.layer_infos]
    costs, width, first_linear = [], architecture.input_size, True
    for i, layer in enumerate(architecture.layers):
        if layer.type == "linear":
            mm = 2 * layer.in_ * layer.out
            costs.append(
                LayerCost(i, "linear", (layer.out,), layer.in_ * layer.out + layer.out, mm,
                          mm if first_linear else 2 * mm)
            )
            width, first_linear = layer.out, False
        else:
            costs.append(LayerCost(i, layer.type, (width,), 0, 0, 0))
    return costs


@dataclass(frozen=True)
class ModelCost:
    params: int
    forward_flops: int  # per sample
    backward_flops: int  # per sample

    @property
    def train_flops(self) -> int:
        return self.forward_flops + self.backward_flops


def model_cost(architecture: Network) -> ModelCost:
    costs = layer_costs(architecture)
    return ModelCost(
        params=sum(c.params for c in costs),
        forward_flops=sum(c.forward_flops for c in costs),
        backward_flops=sum(c.backward_flops for c in costs),
    )
