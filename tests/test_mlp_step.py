"""The written-out MLP step (workbench.train.mlp_step) against autograd: the same gradients,
loss and accuracy for every activation it takes; networks it cannot take train through autograd;
the engine's runs match the autograd step's and stay deterministic."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import events as ev
from workbench.data import load_splits
from workbench.model import InputShape
from workbench.netspec import NetSpec
from workbench.spec import Architecture, Hyperparams
from workbench.train import TrainOptions, train
from workbench.train.mlp_step import MlpStep
from workbench.train.timing import CpuPhaseTimer

LAYERS = {
    "relu": lambda: [nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5)],
    "sigmoid_tanh": lambda: [nn.Linear(20, 16), nn.Sigmoid(), nn.Linear(16, 8), nn.Tanh(),
                             nn.Linear(8, 5)],
    "no_bias_no_activation": lambda: [nn.Linear(20, 16, bias=False), nn.Linear(16, 5)],
    "activation_on_logits": lambda: [nn.Linear(20, 5), nn.Tanh()],
}


def net(name: str) -> nn.Sequential:
    """The same weights on every call."""
    torch.manual_seed(3)
    return nn.Sequential(*LAYERS[name]())


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_loss_and_accuracy_equal_autograd(name):
    x, y = torch.randn(32, 20), torch.randint(0, 5, (32,))
    reference, written = net(name), net(name)
    logits = reference(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()

    layers = MlpStep.plan(written)
    assert layers is not None
    optimizer = torch.optim.SGD(written.parameters(), lr=0.0)  # keep the weights: compare grads
    step = MlpStep(layers, optimizer, torch.device("cpu"))
    step.run(x, y, CpuPhaseTimer())

    for (key, p_ref), p in zip(reference.named_parameters(), written.parameters()):
        assert p.grad is not None, key
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-6, msg=key)
    torch.testing.assert_close(step.last_loss, loss.detach())
    torch.testing.assert_close(step.loss_sum, loss.detach() * 32)
    assert int(step.correct) == int((logits.argmax(1) == y).sum())


def test_the_update_equals_autograd_with_adam():
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    reference, written = net("relu"), net("relu")
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    step = MlpStep(MlpStep.plan(written), torch.optim.Adam(written.parameters(), lr=1e-2),
                   torch.device("cpu"))
    for i in range(5):
        xb, yb = x[i * 12 : (i + 1) * 12], y[i * 12 : (i + 1) * 12]
        ref_opt.zero_grad(set_to_none=True)
        F.cross_entropy(reference(xb), yb).backward()
        ref_opt.step()
        step.run(xb, yb, CpuPhaseTimer())
    for p_ref, p in zip(reference.parameters(), written.parameters()):
        torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("modules", [
    [nn.Linear(4, 4), nn.Dropout(0.1), nn.Linear(4, 2)],
    [nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)],
    [nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)],
    [nn.Linear(4, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2)],
    [nn.ReLU(), nn.Linear(4, 2)],
    [],
], ids=["dropout", "gelu", "batchnorm", "two_activations", "activation_first", "empty"])
def test_networks_it_cannot_take_are_refused(modules):
    assert MlpStep.plan(nn.Sequential(*modules)) is None


def test_a_native_specs_input_reshape_and_flatten_are_taken():
    linear = nn.Linear(784, 10)
    assert MlpStep.plan(nn.Sequential(InputShape([784]), linear)) is not None
    assert MlpStep.plan(nn.Sequential(InputShape([1, 28, 28]), nn.Flatten(), linear)) is not None
    # a reshaped input reaching a linear layer, or a partial flatten, is not a flat MLP
    assert MlpStep.plan(nn.Sequential(InputShape([1, 28, 28]), nn.Linear(28, 10))) is None
    assert MlpStep.plan(nn.Sequential(InputShape([1, 28, 28]), nn.Flatten(2), linear)) is None
    assert MlpStep.plan(nn.Sequential(linear, nn.Flatten())) is None


def test_a_frozen_layer_is_refused():
    model = net("relu")
    model[0].weight.requires_grad_(False)
    assert MlpStep.plan(model) is None
    assert MlpStep.plan(nn.Conv2d(1, 1, 3)) is None  # not a Sequential


@pytest.fixture(scope="module")
def splits():
    return load_splits("mnist", offline=True, limit=1500, progress=False)


HP = Hyperparams.model_validate({"epochs": 2, "batch_size": 64, "seed": 5,
                                 "optimizer": {"type": "adam", "lr": 1e-3}})
LEARNING = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def run(splits, architecture, **options):
    events: list[dict] = []
    result = train(architecture, HP, splits, sink=events.append,
                   options=TrainOptions(device="cpu", **options))
    started = next(e for e in events if e["type"] == ev.RUN_STARTED)
    return result, started["data"]["step_impl"]


ARCHS = {
    "layer_sizes": lambda: Architecture.from_layer_sizes([784, 64, 32, 10]),
    "native_spec": lambda: NetSpec.model_validate({"input_shape": [1, 28, 28], "layers": [
        {"type": "flatten"}, {"type": "linear", "out": 32}, {"type": "tanh"},
        {"type": "linear", "out": 10}]}),
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_engine_runs_match_the_autograd_step_and_are_deterministic(splits, name):
    arch = ARCHS[name]()
    written, impl = run(splits, arch)
    again, _ = run(splits, arch)
    autograd, autograd_impl = run(splits, arch, step_impl="autograd")
    assert (impl, autograd_impl) == ("mlp", "autograd")
    for a, b, c in zip(written.history, again.history, autograd.history):
        for key in LEARNING:
            assert a[key] == b[key], key  # the same seed gives the same run, exactly
            assert a[key] == pytest.approx(c[key], rel=1e-4, abs=1e-5), key
    for p, q in zip(written.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)


def test_a_network_with_dropout_trains_through_autograd(splits):
    arch = Architecture.model_validate({"input_size": 784, "layers": [
        {"type": "linear", "in": 784, "out": 32}, {"type": "relu"},
        {"type": "dropout", "p": 0.2}, {"type": "linear", "in": 32, "out": 10}]},
        context={"allow_dropout": True})
    result, impl = run(splits, arch)
    assert impl == "autograd"
    assert result.history[-1]["val_accuracy"] > 0.5
