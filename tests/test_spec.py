"""Every rule of the MNIST MLP API's Architecture/Hyperparams/Parameters, with exact messages."""

import pytest
from pydantic import ValidationError

from workbench.spec import (
    Architecture,
    CortexModelConfig,
    Hyperparams,
    Parameters,
    error_messages,
    validate_architecture,
)


def lin(i, o):
    return {"type": "linear", "in": i, "out": o}


def arch(*layers, input_size=784):
    return {"input_size": input_size, "layers": list(layers)}


def messages(data, **kw):
    with pytest.raises(ValidationError) as info:
        validate_architecture(data, **kw)
    return error_messages(info.value)


def test_valid_architecture_round_trips():
    data = arch(lin(784, 128), {"type": "relu"}, lin(128, 10), {"type": "softmax"})
    a = validate_architecture(data)
    assert a.to_json() == data
    assert a.layer_sizes == [784, 128, 10]
    assert a.output_size == 10


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_each_activation_allowed(act):
    validate_architecture(arch(lin(784, 32), {"type": act}, lin(32, 10)))


def test_unknown_layer_type():
    assert messages(arch(lin(784, 128), {"type": "conv"}, lin(128, 10))) == [
        "layers[1]: unknown layer type 'conv'; allowed: linear, relu, sigmoid, tanh, softmax"
    ]


def test_softmax_only_last():
    assert messages(arch(lin(784, 128), {"type": "softmax"}, lin(128, 10))) == [
        "layers[1]: softmax is only allowed as the final layer (it is layer 1 of 3)"
    ]


def test_dimension_chain_mismatch_names_both_layers():
    assert messages(arch(lin(784, 128), {"type": "relu"}, lin(64, 10))) == [
        "layers[2]: linear 'in' is 64 but the previous linear layer (layers[0]) outputs 128"
    ]


def test_input_size_must_match_first_linear():
    assert messages(arch(lin(784, 10), input_size=100)) == [
        "layers[0]: linear 'in' is 784 but input_size is 100"
    ]


def test_final_output_must_equal_class_count():
    assert messages(arch(lin(784, 12))) == [
        "layers[0]: final output is 12 but the dataset has 10 classes"
    ]
    validate_architecture(arch(lin(784, 12)), num_classes=12)


def test_at_most_five_linear_layers():
    layers = [lin(784, 64)] + [lin(64, 64) for _ in range(4)] + [lin(64, 10)]
    assert messages(arch(*layers)) == ["layers[5]: at most 5 linear layers are allowed, got 6"]


def test_needs_a_linear_layer():
    assert messages(arch({"type": "relu"})) == ["the architecture needs at least one linear layer"]


def test_dropout_refused_in_strict_form_allowed_in_cortex():
    data = arch(lin(784, 64), {"type": "dropout", "p": 0.2}, lin(64, 10))
    assert messages(data) == [
        "layers[1]: dropout is not allowed here; allowed: linear, relu, sigmoid, tanh, softmax"
    ]
    assert validate_architecture(data, allow_dropout=True).layers[1].p == 0.2


@pytest.mark.parametrize(
    "layer,expected",
    [
        ({"type": "linear", "in": 784}, "layers[0]: a linear layer needs both 'in' and 'out'"),
        ({"type": "relu", "in": 3}, "layers[0]: a relu layer takes no parameters"),
        ({"type": "linear", "in": 0, "out": 10}, "layers[0].in: Input should be greater than or equal to 1"),
    ],
)
def test_layer_field_errors(layer, expected):
    got = messages(arch(layer, lin(784, 10)))
    assert got[0] == expected


def test_extra_fields_refused():
    assert "Extra inputs are not permitted" in messages({**arch(lin(784, 10)), "foo": 1})[0]


def test_layer_sizes_converter():
    a = Architecture.from_layer_sizes([784, 128, 64, 10])
    assert [x.type for x in a.layers] == ["linear", "relu", "linear", "relu", "linear"]
    assert a.layer_sizes == [784, 128, 64, 10]
    with pytest.raises(ValueError, match="at least 2 entries"):
        Architecture.from_layer_sizes([784])


def test_cortex_converter_and_limits():
    a = Architecture.from_cortex(
        {"input_dim": 784, "hidden_dims": [512, 256], "output_dim": 10, "dropout_rate": 0.2}
    )
    assert [x.type for x in a.layers] == [
        "linear", "relu", "dropout", "linear", "relu", "dropout", "linear"
    ]
    assert a.layer_sizes == [784, 512, 256, 10]
    no_dropout = Architecture.from_cortex({"input_dim": 784, "hidden_dims": [32], "output_dim": 10})
    assert "dropout" not in [x.type for x in no_dropout.layers]
    with pytest.raises(ValidationError):
        CortexModelConfig.model_validate({"input_dim": 784, "hidden_dims": [8] * 5, "output_dim": 10})


def test_hyperparams_defaults_and_rules():
    hp = Hyperparams()
    assert (hp.epochs, hp.batch_size, hp.optimizer.type, hp.loss) == (5, 64, "sgd", "cross_entropy")
    assert Hyperparams(max_epochs=100, early_stopping_patience=5).epochs == 100
    with pytest.raises(ValidationError, match="epochs \\(10\\) exceeds max_epochs \\(5\\)"):
        Hyperparams(epochs=10, max_epochs=5)
    with pytest.raises(ValidationError, match="optimizer.type"):
        Hyperparams.model_validate({"optimizer": {"type": "rmsprop"}})
    with pytest.raises(ValidationError, match="dtype"):
        Hyperparams.model_validate({"dtype": "float16"})
    with pytest.raises(ValidationError, match="train_split"):
        Hyperparams.model_validate({"train_split": 0})
    for opt in ("sgd", "adam", "adamw"):
        assert Hyperparams.model_validate({"optimizer": {"type": opt, "lr": 0.01}}).optimizer.lr == 0.01


def test_parameters_checked_against_architecture():
    a = validate_architecture(arch(lin(784, 2), {"type": "relu"}, lin(2, 10)), num_classes=10)
    good = {
        "layers": [
            {"type": "linear", "W": [[0.0] * 784] * 2, "b": [0.0, 0.0]},
            {"type": "relu"},
            {"type": "linear", "W": [[0.0] * 2] * 10, "b": [0.0] * 10},
        ]
    }
    Parameters.model_validate(good).check_against(a)
    bad = {**good, "layers": [{"type": "linear", "W": [[0.0] * 783] * 2, "b": [0.0, 0.0]}, *good["layers"][1:]]}
    with pytest.raises(ValueError, match=r"parameters.layers\[0\].W: expected shape \[2\]\[784\]"):
        Parameters.model_validate(bad).check_against(a)
    with pytest.raises(ValidationError):
        Parameters.model_validate({**good, "dtype": "float64"})


def test_every_broken_rule_is_reported_not_only_the_first():
    """An import with several problems gets each one, with the layer it is about."""
    assert messages(arch(lin(700, 64), {"type": "softmax"}, lin(60, 5))) == [
        "layers[1]: softmax is only allowed as the final layer (it is layer 1 of 3)",
        "layers[2]: linear 'in' is 60 but the previous linear layer (layers[0]) outputs 64",
        "layers[0]: linear 'in' is 700 but input_size is 784",
        "layers[2]: final output is 5 but the dataset has 10 classes",
    ]
