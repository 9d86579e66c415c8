"""The native network spec: an input shape and a list of layers, convolutions included.

``{"input_shape": [1, 28, 28], "layers": [{"type": "conv2d", "out": 6, "kernel": 5}, ...]}``.
The MNIST MLP API keeps its own stricter ``workbench.spec.Architecture``; this richer spec is
what the native faces (``/api/v1``, the CLI, the notebook) accept, told apart by
``input_shape``. Shapes are inferred layer by layer here, so every mistake is reported with the
layer and the shapes that disagree ("layers[3]: conv2d expects [C, H, W], got [128]"), and
parameter counts and FLOPs per sample follow from the spec alone (no torch import).

FLOPs are counted the way ``torch.utils.flop_counter`` counts them: matmuls and convolutions
only, 2 per multiply-add. A conv or linear layer's backward is its weight gradient plus, unless
nothing before it has parameters (its input then needs no gradient), its input gradient; each
costs as much as the forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "softmax")
# type -> (required fields, optional fields)
LAYER_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "conv2d": (frozenset({"out", "kernel"}), frozenset({"stride", "padding"})),
    "maxpool2d": (frozenset({"kernel"}), frozenset({"stride", "padding"})),
    "avgpool2d": (frozenset({"kernel"}), frozenset({"stride", "padding"})),
    "linear": (frozenset({"out"}), frozenset({"in_"})),
    "flatten": (frozenset(), frozenset()),
    "batchnorm1d": (frozenset(), frozenset()),
    "batchnorm2d": (frozenset(), frozenset()),
    "layernorm": (frozenset(), frozenset()),
    "dropout": (frozenset({"p"}), frozenset()),
    **{name: (frozenset(), frozenset()) for name in ACTIVATIONS},
}
NET_LAYER_TYPES = tuple(LAYER_FIELDS)
_FIELD_NAMES = {"in_": "in"}
DEFAULT_NUM_CLASSES = 10


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("spec_error", message)


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class NetLayer(BaseModel):
    """One layer; which fields it takes depends on ``type`` (``LAYER_FIELDS``)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True,
                              allow_inf_nan=False)

    type: str
    out: int | None = Field(default=None, ge=1, le=65536, strict=True,
                            description="output features (linear) or channels (conv2d)")
    in_: int | None = Field(default=None, alias="in", ge=1, le=1 << 24, strict=True,
                            description="linear: input features (optional, checked)")
    kernel: int | None = Field(default=None, ge=1, le=64, strict=True)
    stride: int | None = Field(default=None, ge=1, le=64, strict=True)
    padding: int | None = Field(default=None, ge=0, le=64, strict=True)
    p: float | None = Field(default=None, ge=0.0, lt=1.0, strict=True)

    @model_validator(mode="after")
    def _fields_fit_type(self) -> NetLayer:
        if self.type not in LAYER_FIELDS:
            raise _fail(f"unknown layer type {self.type!r}; allowed: {', '.join(NET_LAYER_TYPES)}")
        required, optional = LAYER_FIELDS[self.type]
        given = {name for name in ("out", "in_", "kernel", "stride", "padding", "p")
                 if getattr(self, name) is not None}
        if missing := sorted(required - given):
            names = ", ".join(repr(_FIELD_NAMES.get(m, m)) for m in missing)
            raise _fail(f"a {self.type} layer needs {names}")
        if extra := sorted(given - required - optional):
            names = ", ".join(repr(_FIELD_NAMES.get(m, m)) for m in extra)
            raise _fail(f"a {self.type} layer does not take {names}")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class LayerInfo:
    """What the spec says about one layer, per sample."""

    index: int
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    forward_flops: int
    backward_flops: int


def _spatial(index: int, layer: NetLayer, shape: tuple[int, ...]) -> tuple[int, int]:
    kernel, padding = layer.kernel or 1, layer.padding or 0
    stride = layer.stride or (kernel if layer.type.endswith("pool2d") else 1)
    if layer.type.endswith("pool2d") and 2 * padding > kernel:
        raise _fail(f"layers[{index}]: {layer.type} padding {padding} is more than half its "
                    f"kernel {kernel}")
    _, h, w = shape
    out_h = (h + 2 * padding - kernel) // stride + 1
    out_w = (w + 2 * padding - kernel) // stride + 1
    if h + 2 * padding < kernel or w + 2 * padding < kernel:
        raise _fail(f"layers[{index}]: {layer.type} kernel {kernel} (padding {padding}) does not "
                    f"fit its input {_shape(shape)}")
    return out_h, out_w


def infer_layers(input_shape: tuple[int, ...], layers: list[NetLayer]) -> list[LayerInfo]:
    """Walk the layers: each one's input/output shape, parameters and FLOPs per sample. Raises
    a spec error naming the first layer whose input does not fit it."""
    infos, shape, has_params_before = [], tuple(input_shape), False
    for i, layer in enumerate(layers):
        kind, params, flops = layer.type, 0, 0
        image = len(shape) == 3
        if kind in ("conv2d", "maxpool2d", "avgpool2d", "batchnorm2d") and not image:
            raise _fail(f"layers[{i}]: {kind} expects [C, H, W], got {_shape(shape)}")
        if kind in ("linear", "batchnorm1d") and image:
            raise _fail(f"layers[{i}]: {kind} expects [features], got {_shape(shape)}; "
                        "add a flatten layer before it")
        if kind == "conv2d":
            c, k, out = shape[0], layer.kernel or 1, layer.out or 1
            oh, ow = _spatial(i, layer, shape)
            out_shape: tuple[int, ...] = (out, oh, ow)
            params = out * c * k * k + out
            flops = 2 * out * c * k * k * oh * ow
        elif kind in ("maxpool2d", "avgpool2d"):
            out_shape = (shape[0], *_spatial(i, layer, shape))
        elif kind == "linear":
            if layer.in_ is not None and layer.in_ != shape[0]:
                raise _fail(f"layers[{i}]: linear 'in' is {layer.in_} but its input is "
                            f"{_shape(shape)}")
            out_shape = (layer.out or 1,)
            params = shape[0] * out_shape[0] + out_shape[0]
            flops = 2 * shape[0] * out_shape[0]
        elif kind == "flatten":
            out_shape = (math.prod(shape),)
        elif kind in ("batchnorm1d", "batchnorm2d"):
            out_shape, params = shape, 2 * shape[0]
        elif kind == "layernorm":
            out_shape, params = shape, 2 * math.prod(shape)
        elif kind == "softmax" and i != len(layers) - 1:
            raise _fail(f"layers[{i}]: softmax is only allowed as the final layer "
                        f"(it is layer {i} of {len(layers)})")
        else:  # activations, dropout and a final softmax keep the shape
            out_shape = shape
        backward = flops * (2 if has_params_before else 1)
        infos.append(LayerInfo(i, kind, shape, out_shape, params, flops, backward))
        has_params_before = has_params_before or params > 0
        shape = out_shape
    return infos


class NetSpec(BaseModel):
    """A feed-forward network over samples of ``input_shape`` (``[C, H, W]`` or
    ``[features]``). Validation context: ``num_classes`` (default 10), the width the last
    layer must output, or None to accept any ``[classes]``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input_shape: list[int] = Field(min_length=1, max_length=3,
                                   description="[C, H, W] for images or [features]")
    layers: list[NetLayer] = Field(min_length=1, max_length=128)

    @model_validator(mode="after")
    def _shapes_fit(self, info: ValidationInfo) -> NetSpec:
        if len(self.input_shape) == 2 or not all(1 <= d <= 1 << 20 for d in self.input_shape):
            raise _fail(f"input_shape must be [C, H, W] or [features] with positive sizes, got "
                        f"{self.input_shape}")
        infos = infer_layers(tuple(self.input_shape), self.layers)
        # None: the dataset is not known yet (a stored model); its run checks the classes.
        num_classes = (info.context or {}).get("num_classes", DEFAULT_NUM_CLASSES)
        last = infos[-1].output_shape
        if num_classes is None and len(last) != 1:
            raise _fail(f"layers[{len(infos) - 1}]: the network outputs {_shape(last)}; it must "
                        "end with [classes] (add a flatten and a linear layer)")
        if num_classes is not None and last != (num_classes,):
            raise _fail(f"layers[{len(infos) - 1}]: the network outputs {_shape(last)} but the "
                        f"dataset has {num_classes} classes (expected [{num_classes}])")
        if not any(x.params for x in infos if x.type in ("linear", "conv2d")):
            raise _fail("the network needs at least one linear or conv2d layer")
        return self

    # The same derived views ``workbench.spec.Architecture`` offers, so the size checks,
    # data checks and inference treat both alike.
    @property
    def layer_infos(self) -> list[LayerInfo]:
        return infer_layers(tuple(self.input_shape), self.layers)

    @property
    def input_size(self) -> int:
        """Floats per sample as the data holds them (a flat row; the model reshapes it)."""
        return math.prod(self.input_shape)

    @property
    def output_size(self) -> int:
        return self.layer_infos[-1].output_shape[0]

    @property
    def param_count(self) -> int:
        return sum(x.params for x in self.layer_infos)

    @property
    def activations_per_sample(self) -> int:
        """Floats one sample occupies on its way through: the input and every layer's output."""
        return self.input_size + sum(math.prod(x.output_shape) for x in self.layer_infos)

    def to_json(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape),
                "layers": [x.to_json() for x in self.layers]}


def is_netspec_json(data: Any) -> bool:
    """The native spec is told apart from the MNIST MLP API's by its ``input_shape``."""
    return isinstance(data, NetSpec) or (isinstance(data, dict) and "input_shape" in data)


def as_netspec_json(data: dict[str, Any]) -> dict[str, Any]:
    """An MNIST MLP API architecture (``input_size`` + linear/activation/dropout layers, whose
    fields the native spec shares) in the native form, ``input_shape: [input_size]``: how a
    network for another dataset than MNIST's ten classes is stored. A native spec is returned
    as it is."""
    if is_netspec_json(data) or "input_size" not in data:
        return data
    return {"input_shape": [data["input_size"]], "layers": data.get("layers", [])}
