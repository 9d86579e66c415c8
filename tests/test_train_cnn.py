"""The engine trains native-spec CNNs (the same device-resident loop as MLPs): it learns on
real MNIST, is seeded, validates in eval mode (dropout off, batchnorm running statistics),
runs from a RunSpec, and matches eager under CUDA graphs when a GPU is present."""

import json
from pathlib import Path

import pytest
import torch

from workbench.data import load_splits
from workbench.spec import Hyperparams, validate_network
from workbench.train import TrainOptions, train
from workbench.train.engine import evaluate
from workbench.train.job import RunSpec, execute

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "architectures"
LENET = validate_network(json.loads((EXAMPLES / "lenet5.json").read_text()))
# small and quick, but with every train/eval-sensitive layer
NORM_NET = validate_network({"input_shape": [1, 28, 28], "layers": [
    {"type": "conv2d", "out": 4, "kernel": 3, "stride": 2},
    {"type": "batchnorm2d"}, {"type": "relu"},
    {"type": "avgpool2d", "kernel": 2},
    {"type": "flatten"}, {"type": "dropout", "p": 0.5},
    {"type": "linear", "out": 32}, {"type": "batchnorm1d"}, {"type": "gelu"},
    {"type": "layernorm"}, {"type": "linear", "out": 10}]})
SMALL = validate_network({"input_shape": [1, 28, 28], "layers": [
    {"type": "conv2d", "out": 4, "kernel": 5, "stride": 2}, {"type": "relu"},
    {"type": "conv2d", "out": 8, "kernel": 3, "stride": 2}, {"type": "silu"},
    {"type": "flatten"}, {"type": "linear", "out": 10}]})


@pytest.fixture(scope="module")
def splits():
    return load_splits("mnist", offline=True, limit=1500, progress=False)


def hp(**kw):
    return Hyperparams.model_validate({"epochs": 2, "batch_size": 64,
                                       "optimizer": {"type": "adam", "lr": 2e-3}, **kw})


def test_lenet_learns_on_real_mnist(splits):
    result = train(LENET, hp(), splits, options=TrainOptions(device="cpu"))
    assert result.final_metrics["val_accuracy"] > 0.75
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]
    assert result.history[-1]["forward_tflops"] > 0


def test_same_seed_same_cnn(splits):
    a = train(NORM_NET, hp(epochs=1), splits, options=TrainOptions(device="cpu"))
    b = train(NORM_NET, hp(epochs=1), splits, options=TrainOptions(device="cpu"))
    for (name, ta), tb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(ta, tb), name


def test_validation_runs_in_eval_mode(splits):
    result = train(NORM_NET, hp(epochs=1), splits, options=TrainOptions(device="cpu"))
    model = result.model
    bn = model.get_submodule("1")
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # trained
    model.eval()
    x, y = splits.x_val, splits.y_val
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # dropout is off
    loss_sum, correct = evaluate(model, x, y)
    metrics = result.final_metrics
    assert metrics["val_accuracy"] == int(correct) / len(y)
    assert metrics["val_loss"] == pytest.approx(float(loss_sum) / len(y), rel=1e-5)


def test_run_spec_trains_a_cnn_and_scores_the_test_split():
    events = []
    execute(RunSpec(run_id="r_cnn", architecture=SMALL.to_json(), offline=True, limit=500,
                    hyperparams={"epochs": 1, "batch_size": 50}), sink=events.append)
    evaluation = [e for e in events if e["type"] == "evaluation"]
    assert evaluation and 0.0 <= evaluation[0]["data"]["test_accuracy"] <= 1.0
    started = next(e for e in events if e["type"] == "run.started")["data"]
    assert started["params"] == SMALL.param_count


def test_frozen_conv_keeps_its_weights(splits):
    before = train(SMALL, hp(epochs=1), splits, options=TrainOptions(device="cpu")).model
    frozen = train(SMALL, hp(epochs=1), splits,
                   options=TrainOptions(device="cpu", freeze=(0,),
                                        initial_weights=before.state_dict()))
    assert torch.equal(frozen.model.get_submodule("0").weight, before.get_submodule("0").weight)
    assert not torch.equal(frozen.model.get_submodule("2").weight,
                           before.get_submodule("2").weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_cnn_matches_eager(splits):
    # no dropout here: graphed and eager draw their random masks differently
    spec = validate_network({**NORM_NET.to_json(), "layers": [
        x for x in NORM_NET.to_json()["layers"] if x["type"] != "dropout"]})
    n = splits.x_train.shape[0]
    assert n % 50 == 0  # whole batches only, so graphs (fixed batch) see what eager sees
    runs = [train(spec, hp(epochs=1, batch_size=50, shuffle=False), splits,
                  options=TrainOptions(device="cuda", cuda_graph=graphed))
            for graphed in (True, False)]
    graph, eager = runs
    assert graph.history[0]["samples_per_s"] > 0 and eager.history[0]["samples_per_s"] > 0
    for name, ta in graph.model.state_dict().items():
        tb = eager.model.state_dict()[name]
        assert torch.allclose(ta.float(), tb.float(), atol=1e-3, rtol=1e-3), name
    assert graph.final_metrics["val_loss"] == pytest.approx(eager.final_metrics["val_loss"],
                                                            rel=1e-3)
