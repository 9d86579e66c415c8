"""Validated specifications: Architecture, Hyperparams and Parameters.

The JSON shapes are those of the MNIST MLP API (``shared/seeds/mnist-mlp-api.md``). Every rule is
enforced here and nowhere else, with messages that name the layer index and the dimensions that
disagree, so the API, the app and the CLI all say the same thing.

Two other API families describe networks differently; both convert into the same canonical
``Architecture``:

- distributed-trainer: ``{"layer_sizes": [784, 128, 64, 10]}`` -> linear layers with ReLU between.
- Cortex: ``{"input_dim", "hidden_dims", "output_dim", "dropout_rate"}`` -> linear/relu/dropout.

Dropout is a native layer type but the MNIST MLP API does not list it, so it is refused unless the
caller validates with ``context={"allow_dropout": True}`` (the Cortex path does).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .netspec import NetSpec, is_netspec_json

MAX_LINEAR_LAYERS = 5
DEFAULT_NUM_CLASSES = 10  # MNIST and Fashion-MNIST both have ten classes
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax")
STRICT_LAYER_TYPES = ("linear", *ACTIVATIONS)
LAYER_TYPES = (*STRICT_LAYER_TYPES, "dropout")

LayerType = Literal["linear", "relu", "sigmoid", "tanh", "softmax", "dropout"]


def _fail(message: str) -> PydanticCustomError:
    # A custom error keeps the message verbatim (no "Value error, " prefix) for API clients.
    return PydanticCustomError("spec_error", message)


def _raise_all(messages: list[str]) -> None:
    """Raise every message at once (one error each, in order); nothing when there are none."""
    if len(messages) == 1:
        raise _fail(messages[0])
    if messages:
        raise ValidationError.from_exception_data("Architecture", [
            InitErrorDetails(type=_fail(m), loc=(), input=None) for m in messages])


def _ctx(info: ValidationInfo, key: str, default: Any) -> Any:
    return (info.context or {}).get(key, default)


class Layer(BaseModel):
    """One layer: ``{"type": "linear", "in": 784, "out": 128}``, ``{"type": "relu"}`` or
    ``{"type": "dropout", "p": 0.2}``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True,
                              allow_inf_nan=False)

    type: str
    in_: int | None = Field(default=None, alias="in", ge=1, le=65536, strict=True)
    out: int | None = Field(default=None, ge=1, le=65536, strict=True)
    p: float | None = Field(default=None, ge=0.0, lt=1.0, strict=True)

    @model_validator(mode="after")
    def _fields_fit_type(self) -> Layer:
        if self.type not in LAYER_TYPES:
            raise _fail(
                f"unknown layer type {self.type!r}; allowed: {', '.join(STRICT_LAYER_TYPES)}"
            )
        if self.type == "linear":
            if self.in_ is None or self.out is None:
                raise _fail("a linear layer needs both 'in' and 'out'")
            if self.p is not None:
                raise _fail("'p' is only for dropout layers")
        elif self.type == "dropout":
            if self.in_ is not None or self.out is not None:
                raise _fail("a dropout layer takes only 'p'")
            if self.p is None:
                raise _fail("a dropout layer needs 'p' (drop probability in [0, 1))")
        elif self.in_ is not None or self.out is not None or self.p is not None:
            raise _fail(f"a {self.type} layer takes no parameters")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Architecture(BaseModel):
    """A feed-forward network as an ordered list of layers.

    Validation context (``Architecture.model_validate(data, context=...)``):
    ``num_classes`` (default 10) and ``allow_dropout`` (default False).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input_size: int = Field(ge=1, le=65536, strict=True,
                            description="features per sample (784 for MNIST)")
    layers: list[Layer] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _layer_rules(self, info: ValidationInfo) -> Architecture:
        # Model-level (not field-level) so messages carry their own "layers[i]" location.
        # Every broken rule is reported, not only the first: an import lists all its problems.
        _raise_all(self._rule_errors(info))
        return self

    def _rule_errors(self, info: ValidationInfo) -> list[str]:
        layers = self.layers
        errors: list[str] = []
        allow_dropout = _ctx(info, "allow_dropout", False)
        for i, layer in enumerate(layers):
            if layer.type == "dropout" and not allow_dropout:
                errors.append(
                    f"layers[{i}]: dropout is not allowed here; "
                    f"allowed: {', '.join(STRICT_LAYER_TYPES)}"
                )
            if layer.type == "softmax" and i != len(layers) - 1:
                errors.append(
                    f"layers[{i}]: softmax is only allowed as the final layer "
                    f"(it is layer {i} of {len(layers)})"
                )
        linear = [i for i, layer in enumerate(layers) if layer.type == "linear"]
        if not linear:
            return [*errors, "the architecture needs at least one linear layer"]
        if len(linear) > MAX_LINEAR_LAYERS:
            errors.append(
                f"layers[{linear[MAX_LINEAR_LAYERS]}]: at most {MAX_LINEAR_LAYERS} linear layers "
                f"are allowed, got {len(linear)}"
            )
        for prev, cur in zip(linear, linear[1:]):
            if layers[cur].in_ != layers[prev].out:
                errors.append(
                    f"layers[{cur}]: linear 'in' is {layers[cur].in_} but the previous linear "
                    f"layer (layers[{prev}]) outputs {layers[prev].out}"
                )
        first, last = linear[0], linear[-1]
        if layers[first].in_ != self.input_size:
            errors.append(
                f"layers[{first}]: linear 'in' is {layers[first].in_} but input_size is "
                f"{self.input_size}"
            )
        num_classes = _ctx(info, "num_classes", DEFAULT_NUM_CLASSES)
        if layers[last].out != num_classes:
            errors.append(
                f"layers[{last}]: final output is {layers[last].out} but the dataset has "
                f"{num_classes} classes"
            )
        return errors

    # Derived views -----------------------------------------------------------------------
    @property
    def linear_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.type == "linear"]

    @property
    def output_size(self) -> int:
        return self.linear_layers[-1].out  # type: ignore[return-value]

    @property
    def layer_sizes(self) -> list[int]:
        """``[784, 128, 10]``: the distributed-trainer view of the linear chain."""
        linear = self.linear_layers
        return [linear[0].in_, *(layer.out for layer in linear)]  # type: ignore[list-item]

    @property
    def param_count(self) -> int:
        """Weights and biases of every linear layer (``workbench.model.model_cost`` agrees)."""
        return sum((x.in_ or 0) * (x.out or 0) + (x.out or 0) for x in self.linear_layers)

    @property
    def activations_per_sample(self) -> int:
        """Floats one sample occupies on its way through: the input plus every layer's output
        (each is kept for the backward pass)."""
        total, width = self.input_size, self.input_size
        for layer in self.layers:
            if layer.type == "linear" and layer.out is not None:
                width = layer.out
            total += width
        return total

    def to_json(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "layers": [x.to_json() for x in self.layers]}

    # Converters from the other API families ---------------------------------------------------
    @classmethod
    def from_layer_sizes(
        cls, layer_sizes: list[int], *, activation: str = "relu", num_classes: int | None = None
    ) -> Architecture:
        """distributed-trainer ``model_config.layer_sizes`` -> linear layers, ``activation``
        between them (none after the last)."""
        if len(layer_sizes) < 2:
            raise ValueError(
                f"layer_sizes needs at least 2 entries (input and output), got {len(layer_sizes)}"
            )
        layers: list[dict[str, Any]] = []
        for i, (a, b) in enumerate(zip(layer_sizes, layer_sizes[1:])):
            if i:
                layers.append({"type": activation})
            layers.append({"type": "linear", "in": a, "out": b})
        return cls.model_validate(
            {"input_size": layer_sizes[0], "layers": layers},
            context={"num_classes": num_classes or layer_sizes[-1]},
        )

    @classmethod
    def from_cortex(cls, config: dict[str, Any] | CortexModelConfig) -> Architecture:
        """Cortex ``neural_model_config`` -> linear/relu/dropout chain."""
        cfg = CortexModelConfig.model_validate(config)
        layers: list[dict[str, Any]] = []
        width = cfg.input_dim
        for hidden in cfg.hidden_dims:
            layers += [{"type": "linear", "in": width, "out": hidden}, {"type": "relu"}]
            if cfg.dropout_rate > 0:
                layers.append({"type": "dropout", "p": cfg.dropout_rate})
            width = hidden
        layers.append({"type": "linear", "in": width, "out": cfg.output_dim})
        return cls.model_validate(
            {"input_size": cfg.input_dim, "layers": layers},
            context={"allow_dropout": True, "num_classes": cfg.output_dim},
        )


class CortexModelConfig(BaseModel):
    """Cortex ``neural_model_config``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input_dim: int = Field(ge=1, le=65536, strict=True)
    hidden_dims: list[Annotated[int, Field(ge=1, le=65536, strict=True)]] = Field(
        default_factory=list, max_length=MAX_LINEAR_LAYERS - 1
    )
    output_dim: int = Field(ge=1, le=65536, strict=True)
    dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0, strict=True)


class Optimizer(BaseModel):
    """``{"type": "sgd", "lr": 0.1, "momentum": 0.0}``; adam and adamw take ``betas``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    type: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(default=0.1, gt=0.0, le=10.0, strict=True)
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, strict=True, description="sgd only")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, strict=True)
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="adam/adamw only")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise _fail(f"betas must each be in [0, 1), got {list(betas)}")
        return betas


class Hyperparams(BaseModel):
    """Training hyperparameters of the MNIST MLP API, plus the Cortex early-stopping knobs.

    ``max_epochs`` (Cortex) is an upper bound: when it is given and ``epochs`` is not, training
    runs up to ``max_epochs`` unless early stopping ends it first. ``early_stopping_patience``
    stops after that many epochs without a validation-loss improvement of at least ``min_delta``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epochs: int = Field(default=5, ge=1, le=1000, strict=True)
    batch_size: int = Field(default=64, ge=1, le=65536, strict=True)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    loss: Literal["cross_entropy"] = "cross_entropy"
    seed: int = Field(default=42, ge=0, le=2**63 - 1, strict=True)
    train_split: float = Field(default=0.9, gt=0.0, le=1.0, strict=True)
    shuffle: bool = Field(default=True, strict=True)
    dtype: Literal["float32"] = "float32"
    early_stopping_patience: int | None = Field(default=None, ge=1, le=1000, strict=True)
    min_delta: float = Field(default=0.0, ge=0.0, strict=True)
    max_epochs: int | None = Field(default=None, ge=1, le=1000, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _max_epochs_sets_epochs(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_epochs") is not None and "epochs" not in data:
            data = {**data, "epochs": data["max_epochs"]}
        return data

    @model_validator(mode="after")
    def _epochs_within_max(self) -> Hyperparams:
        if self.max_epochs is not None and self.epochs > self.max_epochs:
            raise _fail(f"epochs ({self.epochs}) exceeds max_epochs ({self.max_epochs})")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ParamLayer(BaseModel):
    """One layer of a Parameters document. ``W`` has shape ``[out][in]`` (row ``j`` holds the
    weights into output unit ``j``, as ``torch.nn.Linear.weight``), so ``y = x @ W.T + b``."""

    model_config = ConfigDict(extra="forbid")

    type: str
    W: list[list[float]] | None = None
    b: list[float] | None = None
    p: float | None = None


class Parameters(BaseModel):
    """Trained weights in the MNIST MLP API's JSON form."""

    model_config = ConfigDict(extra="forbid")

    layers: list[ParamLayer] = Field(min_length=1, max_length=64)
    dtype: Literal["float32"] = "float32"
    layout: Literal["row_major"] = "row_major"

    def check_against(self, architecture: Architecture) -> None:
        """Raise ``ValueError`` naming the first layer whose shape disagrees with the
        architecture."""
        if len(self.layers) != len(architecture.layers):
            raise ValueError(
                f"parameters have {len(self.layers)} layers but the architecture has "
                f"{len(architecture.layers)}"
            )
        for i, (p, a) in enumerate(zip(self.layers, architecture.layers)):
            if p.type != a.type:
                raise ValueError(f"parameters.layers[{i}]: type {p.type!r}, architecture {a.type!r}")
            if a.type != "linear":
                continue
            if p.W is None or p.b is None:
                raise ValueError(f"parameters.layers[{i}]: a linear layer needs 'W' and 'b'")
            if len(p.W) != a.out or any(len(row) != a.in_ for row in p.W):
                rows = len(p.W)
                cols = len(p.W[0]) if p.W else 0
                raise ValueError(
                    f"parameters.layers[{i}].W: expected shape [{a.out}][{a.in_}] (out x in), "
                    f"got [{rows}][{cols}]"
                )
            if len(p.b) != a.out:
                raise ValueError(
                    f"parameters.layers[{i}].b: expected {a.out} values, got {len(p.b)}"
                )


# ---- submission limits ------------------------------------------------------------------------
class SubmitError(ValueError):
    """A submission this server will not store or run: over a limit, or not fitting its data,
    device or target. ``field`` names the offending request field in the MNIST MLP API's terms
    (``architecture``, ``hyperparams.batch_size``, ``dataset``, ``device``, ``world_size``,
    ``data_url``); each API family renames it to its own (``neural_model_config``, ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


Network = Architecture | NetSpec  # the MNIST MLP API's MLP, or the native spec (CNNs)


def activation_bytes(architecture: Network, batch_size: int, *,
                     training: bool = True) -> int:
    """float32 bytes of one batch's activations, and (training) their gradients."""
    return 4 * batch_size * architecture.activations_per_sample * (2 if training else 1)


def check_model_limits(
    architecture: Network, *, batch_size: int | None = None, limits: Any = None,
    training: bool = True, batch_field: str = "hyperparams.batch_size",
) -> None:
    """The one size check every face applies before storing a model or a run (raises
    :class:`SubmitError`): parameters against ``limits.max_params`` and, given a batch size,
    activation memory against ``limits.max_activation_bytes`` (``workbench.config.Limits``)."""
    if limits is None:
        from .config import get_settings

        limits = get_settings().limits
    params = architecture.param_count
    if params > limits.max_params:
        raise SubmitError("architecture", f"the network has {params:,} parameters; this server "
                          f"trains at most {limits.max_params:,} (WORKBENCH_MAX_PARAMS)")
    if batch_size is not None:
        need = activation_bytes(architecture, batch_size, training=training)
        if need > limits.max_activation_bytes:
            raise SubmitError(batch_field, f"a batch of {batch_size} needs {need:,} bytes of "
                              "activations for this network; this server allows at most "
                              f"{limits.max_activation_bytes:,} (WORKBENCH_MAX_ACTIVATION_BYTES); "
                              "use a smaller batch_size or network")


def validate_architecture(
    data: Any, *, num_classes: int = DEFAULT_NUM_CLASSES, allow_dropout: bool = False
) -> Architecture:
    """Validate an MNIST MLP API architecture JSON document (raises
    ``pydantic.ValidationError``)."""
    if isinstance(data, Architecture):
        data = data.to_json()
    return Architecture.model_validate(
        data, context={"num_classes": num_classes, "allow_dropout": allow_dropout}
    )


def validate_network(
    data: Any, *, num_classes: int | None = DEFAULT_NUM_CLASSES, allow_dropout: bool = False
) -> Network:
    """The native faces' validation: a document with ``input_shape`` is a
    :class:`~workbench.netspec.NetSpec` (dropout always allowed; ``num_classes=None``: any
    number of classes, checked against the dataset when it runs), anything else an
    :class:`Architecture` under the MNIST MLP API's rules."""
    if is_netspec_json(data):
        if isinstance(data, NetSpec):
            data = data.to_json()
        return NetSpec.model_validate(data, context={"num_classes": num_classes})
    return validate_architecture(data, num_classes=num_classes or DEFAULT_NUM_CLASSES,
                                 allow_dropout=allow_dropout)


def error_messages(exc: Exception) -> list[str]:
    """Flatten a pydantic ``ValidationError`` (or any exception) into readable lines:
    ``architecture.layers[2]: linear 'in' is 64 but ...``."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return [str(exc)]
    lines = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        lines.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return lines
