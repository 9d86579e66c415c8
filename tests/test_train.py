"""The training engine on real (bundled) MNIST: determinism, early stopping, cancel, TFLOPS,
events, freezing, failure reporting, and the CUDA-graph path when a GPU is present."""

import base64

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode

from workbench import events as ev
from workbench.data import load_splits
from workbench.model import build_model, from_safetensors
from workbench.spec import Architecture, Hyperparams
from workbench.train import TrainOptions, train
from workbench.train.job import RunSpec, execute

ARCH = Architecture.from_layer_sizes([784, 64, 10])
TIMING_KEYS = {"epoch_time_s", "samples_per_s", "forward_tflops", "backward_tflops",
               "total_tflops", "forward_time_s", "backward_time_s", "peak_memory_bytes",
               "share_of_peak", "mfu", "spec_peak_tflops", "matmul_dtype"}  # from the timings


@pytest.fixture(scope="module")
def splits():
    return load_splits("mnist", offline=True, limit=2000, progress=False)


def hp(**kw):
    return Hyperparams.model_validate({"epochs": 2, "batch_size": 64,
                                       "optimizer": {"type": "adam", "lr": 1e-3}, **kw})


def learning(history):
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def test_same_seed_same_metrics_and_weights(splits):
    a = train(ARCH, hp(), splits, options=TrainOptions(device="cpu"))
    b = train(ARCH, hp(), splits, options=TrainOptions(device="cpu"))
    assert learning(a.history) == learning(b.history)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    c = train(ARCH, hp(seed=7), splits, options=TrainOptions(device="cpu"))
    assert learning(c.history) != learning(a.history)


def test_it_learns(splits):
    result = train(ARCH, hp(epochs=3), splits)
    assert result.final_metrics["val_accuracy"] > 0.8
    assert result.history[0]["train_loss"] > result.history[-1]["train_loss"]


def test_event_stream_shape(splits):
    events = []
    result = train(ARCH, hp(), splits, run_id="r_test", sink=events.append)
    types = [e["type"] for e in events]
    assert types[0] == ev.RUN_STARTED and types[-1] == ev.RUN_COMPLETED
    assert types.count(ev.EPOCH) == 2 and ev.STEP in types
    assert all(e["run_id"] == "r_test" for e in events)
    started = events[0]["data"]
    assert started["optimizer_impl"] == result.optimizer_impl
    assert result.optimizer_impl in {"fused", "foreach", "single_tensor"}
    epochs = [e["data"] for e in events if e["type"] == ev.EPOCH]
    assert [e["epoch"] for e in epochs] == [1, 2]
    steps = [e["data"]["step"] for e in events if e["type"] == ev.STEP]
    assert steps == sorted(steps) and steps[-1] == epochs[-1]["step"]
    done = events[-1]["data"]
    weights = from_safetensors(base64.b64decode(done["parameters_safetensors_b64"]))
    for key, value in result.model.state_dict().items():
        assert torch.equal(weights[key], value)
    assert done["size_bytes"] == 4 * sum(p.numel() for p in result.model.parameters())


def test_early_stopping(splits):
    # min_delta larger than any possible improvement: the second epoch counts as stale.
    result = train(ARCH, hp(epochs=10, early_stopping_patience=1, min_delta=100.0), splits)
    assert result.stopped_early and len(result.history) == 2


def test_cancel_stops_promptly(splits):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 40

    events = []
    result = train(ARCH, hp(epochs=5), splits, sink=events.append, should_stop=should_stop)
    assert result.cancelled
    assert events[-1]["type"] == ev.RUN_CANCELLED
    assert not any(e["type"] == ev.RUN_COMPLETED for e in events)


def test_reported_tflops_match_flop_counter(splits):
    """Achieved TFLOPS = counted FLOPs / measured time: the engine's FLOPs (from the spec)
    must agree with torch's FLOP counter on a real step within 10%."""
    result = train(ARCH, hp(epochs=1, batch_size=100), splits)
    m = result.history[0]
    model = build_model(ARCH)
    x, y = splits.x_train[:100], splits.y_train[:100]
    with FlopCounterMode(display=False) as fwd:
        loss = F.cross_entropy(model(x), y)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    n = splits.x_train.shape[0]
    steps = n // 100
    truth_fwd = fwd.get_total_flops() * steps / m["forward_time_s"] / 1e12
    truth_bwd = bwd.get_total_flops() * steps / m["backward_time_s"] / 1e12
    truth_total = (fwd.get_total_flops() + bwd.get_total_flops()) * steps / (
        m["forward_time_s"] + m["backward_time_s"]) / 1e12
    assert m["forward_tflops"] == pytest.approx(truth_fwd, rel=0.10)
    assert m["backward_tflops"] == pytest.approx(truth_bwd, rel=0.10)
    assert m["total_tflops"] == pytest.approx(truth_total, rel=0.10)
    assert m["samples_per_s"] > 0 and m["forward_tflops"] > 0


def test_frozen_layer_keeps_its_weights(splits):
    torch.manual_seed(1)
    start = build_model(ARCH).state_dict()
    result = train(ARCH, hp(epochs=1), splits,
                   options=TrainOptions(initial_weights=start, freeze=(0,)))
    after = result.model.state_dict()
    assert torch.equal(after["0.weight"], start["0.weight"])
    assert torch.equal(after["0.bias"], start["0.bias"])
    assert not torch.equal(after["2.weight"], start["2.weight"])


def test_bad_spec_reports_run_failed():
    events = []
    with pytest.raises(ValidationError):
        execute({"run_id": "r_bad", "architecture": {"input_size": 784, "layers": []}},
                sink=events.append)
    assert events[-1]["type"] == ev.RUN_FAILED and "layers" in events[-1]["data"]["error"]


def test_run_spec_executes_end_to_end():
    events = []
    spec = RunSpec(run_id="r_spec", architecture=ARCH.to_json(),
                   hyperparams={"epochs": 1}, offline=True, limit=500)
    result = execute(spec, sink=events.append)
    assert len(result.history) == 1 and events[-1]["type"] == ev.RUN_COMPLETED


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_matches_eager(splits):
    graph = train(ARCH, hp(), splits, options=TrainOptions(device="cuda", cuda_graph=True))
    eager = train(ARCH, hp(), splits, options=TrainOptions(device="cuda", cuda_graph=False))
    # Graphs drop the incomplete last batch, so compare loosely; both must learn.
    assert graph.final_metrics["val_accuracy"] == pytest.approx(
        eager.final_metrics["val_accuracy"], abs=0.03)
    assert graph.final_metrics["forward_tflops"] > 0
