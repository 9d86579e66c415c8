"""Checkpoints in the engine: 4 epochs straight equal 2 epochs, a pause (checkpoint), and 2
more resumed from that checkpoint -- per-epoch metrics and final weights, bit for bit (CPU)."""

import base64

import pytest
import torch

from workbench import events as ev
from workbench.data import load_splits
from workbench.spec import Architecture, Hyperparams
from workbench.train import TrainOptions, train
from workbench.train.checkpoint import Checkpoint

ARCH = Architecture.from_layer_sizes([784, 32, 10])
LEARNING = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


@pytest.fixture(scope="module")
def splits():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only contend on a loaded machine
    yield load_splits("mnist", offline=True, limit=600, progress=False)
    torch.set_num_threads(threads)


def hp(optimizer):
    return Hyperparams.model_validate({"epochs": 4, "batch_size": 64, "optimizer": optimizer,
                                       "early_stopping_patience": 3})


def learning(history):
    return [{k: h[k] for k in LEARNING} for h in history]


@pytest.mark.parametrize("optimizer", [{"type": "adam", "lr": 1e-3},
                                       {"type": "sgd", "lr": 0.05, "momentum": 0.9}])
def test_pause_and_resume_reproduce_an_uninterrupted_run(splits, optimizer):
    straight = train(ARCH, hp(optimizer), splits, options=TrainOptions(device="cpu"))

    events: list = []
    first = train(ARCH, hp(optimizer), splits, sink=events.append,
                  options=TrainOptions(device="cpu"),
                  should_pause=lambda: len([e for e in events if e["type"] == ev.EPOCH]) >= 2)
    assert first.paused and [e["type"] for e in events][-2:] == [ev.CHECKPOINT, ev.RUN_PAUSED]
    saved = events[-2]["data"]
    assert saved["epoch"] == 2
    checkpoint = Checkpoint.from_blob(base64.b64decode(saved["tensors_safetensors_b64"]),
                                      saved["state"])

    rest: list = []
    second = train(ARCH, hp(optimizer), splits, sink=rest.append,
                   options=TrainOptions(device="cpu", resume_from=checkpoint))
    assert [h["epoch"] for h in second.history] == [3, 4]
    assert rest[0]["data"]["resumed_from_epoch"] == 2
    assert rest[-1]["data"]["epochs_run"] == 4
    assert learning(first.history + second.history) == learning(straight.history)
    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_every_n_epochs(splits):
    events: list = []
    train(ARCH, hp({"type": "adam", "lr": 1e-3}), splits, sink=events.append,
          options=TrainOptions(device="cpu", checkpoint_every=2))
    # the last epoch ends the run: no checkpoint is needed there
    assert [e["data"]["epoch"] for e in events if e["type"] == ev.CHECKPOINT] == [2]


def test_a_checkpoint_of_another_architecture_is_refused(splits):
    events: list = []
    train(ARCH, hp({"type": "adam", "lr": 1e-3}), splits, sink=events.append,
          options=TrainOptions(device="cpu", checkpoint_every=1))
    saved = next(e for e in events if e["type"] == ev.CHECKPOINT)["data"]
    checkpoint = Checkpoint.from_blob(base64.b64decode(saved["tensors_safetensors_b64"]),
                                      saved["state"])
    other = Architecture.from_layer_sizes([784, 16, 10])
    with pytest.raises(ValueError, match="does not fit this model"):
        train(other, hp({"type": "adam", "lr": 1e-3}), splits,
              options=TrainOptions(device="cpu", resume_from=checkpoint))
