"""The native network spec: shape inference and its errors, parameter counts and FLOPs from the
spec alone against torch (``torch.utils.flop_counter``) for every layer type, the limits, and
that the MNIST MLP API's Architecture is untouched by it."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from workbench.config import Limits
from workbench.model import build_model, layer_costs, model_cost
from workbench.netspec import ACTIVATIONS, NET_LAYER_TYPES, NetSpec
from workbench.spec import (
    Architecture,
    Hyperparams,
    SubmitError,
    check_model_limits,
    error_messages,
    validate_architecture,
    validate_network,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "architectures"


def net(input_shape, *layers, num_classes=10):
    return validate_network({"input_shape": input_shape, "layers": list(layers)},
                            num_classes=num_classes)


def message(data, **kw):
    with pytest.raises(ValidationError) as info:
        validate_network(data, **kw)
    return "; ".join(error_messages(info.value))


# One small net per layer type: the layer sits after a conv (image layers) or a linear (1-D
# layers), so both the "input needs a gradient" and the "first layer" backward paths count.
def with_layer(layer: dict) -> NetSpec:
    kind = layer["type"]
    conv = {"type": "conv2d", "out": 4, "kernel": 3, "stride": 2, "padding": 1}
    if kind in ("conv2d", "maxpool2d", "avgpool2d", "batchnorm2d"):
        return net([3, 12, 12], conv, layer, {"type": "flatten"}, {"type": "linear", "out": 10})
    if kind in ("flatten",):
        return net([3, 12, 12], conv, layer, {"type": "linear", "out": 10})
    if kind == "softmax":
        return net([20], {"type": "linear", "out": 16}, {"type": "relu"},
                   {"type": "linear", "out": 10}, layer)
    return net([20], {"type": "linear", "out": 16}, layer, {"type": "linear", "out": 10})


LAYERS = {
    "conv2d": {"type": "conv2d", "out": 5, "kernel": 3, "stride": 1, "padding": 1},
    "maxpool2d": {"type": "maxpool2d", "kernel": 2},
    "avgpool2d": {"type": "avgpool2d", "kernel": 3, "stride": 2, "padding": 1},
    "linear": {"type": "linear", "out": 12},
    "flatten": {"type": "flatten"},
    "batchnorm1d": {"type": "batchnorm1d"},
    "batchnorm2d": {"type": "batchnorm2d"},
    "layernorm": {"type": "layernorm"},
    "dropout": {"type": "dropout", "p": 0.3},
    **{name: {"type": name} for name in ACTIVATIONS},
}


def test_every_layer_type_is_covered():
    assert set(LAYERS) == set(NET_LAYER_TYPES)


def counted_flops(spec: NetSpec, batch: int = 8) -> tuple[int, int]:
    """(forward, backward) FLOPs per sample as torch counts one training step."""
    torch.manual_seed(0)
    model = build_model(spec).train()
    x = torch.randn(batch, spec.input_size)
    y = torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as fwd:
        loss = F.cross_entropy(model(x), y)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    return fwd.get_total_flops() // batch, bwd.get_total_flops() // batch


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_flops_and_params_from_the_spec_equal_torch(kind):
    spec = with_layer(LAYERS[kind])
    cost = model_cost(spec)
    assert (cost.forward_flops, cost.backward_flops) == counted_flops(spec)
    model = build_model(spec)
    assert cost.params == spec.param_count == sum(p.numel() for p in model.parameters())
    # every layer's own parameter count, too
    for c in layer_costs(spec):
        module = model.get_submodule(str(c.index))
        assert c.params == sum(p.numel() for p in module.parameters()), c


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_inferred_shapes_equal_torch(kind):
    spec = with_layer(LAYERS[kind])
    model = build_model(spec).eval()
    h = torch.randn(2, spec.input_size)
    h = model.get_submodule("input")(h)
    for info in spec.layer_infos:
        h = model.get_submodule(str(info.index))(h)
        assert tuple(h.shape[1:]) == info.output_shape, info


@pytest.mark.parametrize("name", ["mlp", "lenet5", "small-vgg"])
def test_shipped_presets_are_valid(name):
    spec = validate_network(json.loads((EXAMPLES / f"{name}.json").read_text()))
    assert spec.input_size == 784 and spec.output_size == 10
    out = build_model(spec).eval()(torch.randn(3, 784))
    assert out.shape == (3, 10)


@pytest.mark.parametrize("data, expected", [
    ({"input_shape": [784], "layers": [{"type": "linear", "out": 128}, {"type": "relu"},
                                       {"type": "conv2d", "out": 3, "kernel": 3},
                                       {"type": "linear", "out": 10}]},
     "layers[2]: conv2d expects [C, H, W], got [128]"),
    ({"input_shape": [1, 28, 28], "layers": [{"type": "linear", "out": 10}]},
     "layers[0]: linear expects [features], got [1, 28, 28]; add a flatten layer before it"),
    ({"input_shape": [1, 4, 4], "layers": [{"type": "maxpool2d", "kernel": 2},
                                           {"type": "conv2d", "out": 2, "kernel": 3}]},
     "layers[1]: conv2d kernel 3 (padding 0) does not fit its input [1, 2, 2]"),
    ({"input_shape": [1, 28, 28], "layers": [{"type": "flatten"},
                                             {"type": "linear", "out": 12}]},
     "layers[1]: the network outputs [12] but the dataset has 10 classes (expected [10])"),
    ({"input_shape": [1, 28, 28], "layers": [{"type": "conv2d", "out": 10, "kernel": 28},
                                             {"type": "flatten"}, {"type": "softmax"},
                                             {"type": "relu"}]},
     "layers[2]: softmax is only allowed as the final layer (it is layer 2 of 4)"),
    ({"input_shape": [784], "layers": [{"type": "linear", "in": 700, "out": 10}]},
     "layers[0]: linear 'in' is 700 but its input is [784]"),
    ({"input_shape": [784], "layers": [{"type": "conv3d"}]}, "unknown layer type 'conv3d'"),
    ({"input_shape": [1, 8, 8], "layers": [{"type": "conv2d", "kernel": 3}]},
     "a conv2d layer needs 'out'"),
    ({"input_shape": [784], "layers": [{"type": "relu", "p": 0.5}]},
     "a relu layer does not take 'p'"),
    ({"input_shape": [28, 28], "layers": [{"type": "flatten"}]}, "input_shape must be"),
    ({"input_shape": [1, 8, 8], "layers": [{"type": "maxpool2d", "kernel": 2, "padding": 2}]},
     "layers[0]: maxpool2d padding 2 is more than half its kernel 2"),
])
def test_errors_name_the_layer_and_the_shapes(data, expected):
    assert expected in message(data)


def test_num_classes_comes_from_the_dataset():
    spec = net([4], {"type": "linear", "out": 3}, num_classes=3)
    assert spec.output_size == 3


def test_limits_count_params_and_activations():
    spec = validate_network(json.loads((EXAMPLES / "lenet5.json").read_text()))
    with pytest.raises(SubmitError, match="WORKBENCH_MAX_PARAMS") as info:
        check_model_limits(spec, limits=Limits(max_params=1000))
    assert info.value.field == "architecture"
    per_sample = spec.activations_per_sample
    # input (784) + conv (6x28x28) + relu + pool (6x14x14) + ... : at least the first conv's
    assert per_sample > 784 + 2 * 6 * 28 * 28
    limits = Limits(max_activation_bytes=4 * 2 * per_sample * 100)
    check_model_limits(spec, batch_size=100, limits=limits)
    with pytest.raises(SubmitError, match="WORKBENCH_MAX_ACTIVATION_BYTES"):
        check_model_limits(spec, batch_size=101, limits=limits)


def test_the_mnist_mlp_api_architecture_keeps_its_rules():
    # input_shape is not part of the MNIST MLP API: refused there, as any unknown field is
    with pytest.raises(ValidationError):
        validate_architecture({"input_shape": [784], "layers": [{"type": "linear", "out": 10}]})
    with pytest.raises(ValidationError, match="unknown layer type 'gelu'"):
        validate_architecture({"input_size": 784, "layers": [
            {"type": "linear", "in": 784, "out": 10}, {"type": "gelu"}]})
    mlp = {"input_size": 784, "layers": [{"type": "linear", "in": 784, "out": 10}]}
    assert isinstance(validate_network(mlp), Architecture)
    # dropout stays refused for the MLP form unless asked for, but the native spec has it
    with pytest.raises(ValidationError, match="dropout is not allowed"):
        validate_network({"input_size": 784, "layers": [
            {"type": "linear", "in": 784, "out": 10}, {"type": "dropout", "p": 0.1}]})
    assert validate_network({"input_shape": [784], "layers": [
        {"type": "linear", "out": 10}, {"type": "dropout", "p": 0.1}]}).param_count == 7850


def test_the_service_checks_a_native_spec_against_its_run(tmp_path):
    from workbench.service import Workbench
    from workbench.store import Store

    service = Workbench(Store(tmp_path / "wb.duckdb"), max_workers=0)
    try:
        lenet = json.loads((EXAMPLES / "lenet5.json").read_text())
        model = service.create_model(lenet)  # stored: its classes are checked per run
        assert model.architecture == validate_network(lenet).to_json()
        with pytest.raises(SubmitError, match="strategy 'single'"):
            service.check_submission(validate_network(lenet), Hyperparams(),
                                     target="distributed",
                                     spec_overrides={"strategy": "ddp", "world_size": 2})
        three = service.create_model({"input_shape": [784], "layers": [
            {"type": "linear", "out": 3}]})
        with pytest.raises(SubmitError, match="outputs 3 classes but MNIST has 10"):
            service.start_run(three.model_id, dataset="mnist")
        with pytest.raises(ValidationError, match="must end with \\[classes\\]"):
            service.create_model({"input_shape": [1, 8, 8], "layers": [
                {"type": "conv2d", "out": 2, "kernel": 3}]})
    finally:
        service.close()
