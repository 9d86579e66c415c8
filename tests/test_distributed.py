"""Distributed training on torch.distributed (gloo, CPU): layer allocation, pipeline and DDP
over two real processes matching single-process training step by step, and the failure modes
(a worker killed mid-training, a worker that is not there) ending the job quickly."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from tests.utils.workers import running_workers
from workbench.data import load_splits
from workbench.distributed.allocation import allocate
from workbench.distributed.coordinator import JobFailed, run_job
from workbench.distributed.job import DistJob
from workbench.distributed.launch import run_local
from workbench.distributed.worker import RemoteRank, worker_health
from workbench.spec import Architecture, Hyperparams
from workbench.train import TrainOptions, train
from workbench.train.job import RunSpec

ARCH = Architecture.from_layer_sizes([784, 32, 16, 10])
HP = {"epochs": 2, "batch_size": 64, "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9}}
LIMIT = 500  # 450 training samples: 7 full batches of 64 and a short one of 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- allocation ------------------------------------------------------------------------------
def test_allocation_balances_flops_over_scores():
    plans = allocate(ARCH, [1.0, 1.0])
    assert [(p.start, p.end) for p in plans] == [(0, 2), (2, 5)]  # the 784x32 layer dominates
    assert plans[0].linear_layers == (0,) and plans[1].linear_layers == (2, 4)
    # Spec layers are covered once, in order, and FLOPs add up to the model's.
    from workbench.model import model_cost

    assert sum(p.train_flops for p in plans) == model_cost(ARCH).train_flops


def test_allocation_follows_device_scores():
    wide = Architecture.from_layer_sizes([100, 100, 100, 100, 10])  # similar layers
    even = allocate(wide, [1.0, 1.0])
    fast_second = allocate(wide, [1.0, 100.0])
    assert fast_second[0].end < even[0].end  # a much faster device 2 takes more layers
    fast_first = allocate(wide, [100.0, 1.0])
    assert fast_first[0].end > even[0].end


def test_allocation_uses_at_most_one_device_per_linear_layer():
    plans = allocate(Architecture.from_layer_sizes([784, 10]), [1.0, 5.0, 2.0])
    assert len(plans) == 1 and plans[0].device == 1  # the fastest device


@pytest.mark.parametrize("scores, message", [([], "no devices"), ([1.0, 0.0], "device 2")])
def test_allocation_rejects_bad_scores(scores, message):
    with pytest.raises(ValueError, match=message):
        allocate(ARCH, scores)


# ---- correctness: 2 processes vs 1 -----------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    """Single-process engine losses, every step reported."""
    splits = load_splits("mnist", offline=True, limit=LIMIT, progress=False)
    events = []
    train(ARCH, Hyperparams.model_validate(HP), splits, sink=events.append,
          options=TrainOptions(device="cpu", step_events_per_epoch=1000))
    steps = [e["data"]["loss"] for e in events if e["type"] == "step"]
    epochs = [e["data"] for e in events if e["type"] == "epoch"]
    return steps, epochs


def _job(strategy: str, **kw) -> DistJob:
    run = RunSpec(run_id="r_dist", architecture=ARCH.to_json(), hyperparams=HP, device="cpu",
                  limit=LIMIT, offline=True)
    plan = [p.to_json() for p in allocate(ARCH, [1.0, 1.0])] if strategy == "pipeline" else []
    return DistJob(job_id=f"t-{strategy}-{os.getpid()}", strategy=strategy, world_size=2,
                   run=run, plan=plan, step_events_per_epoch=1000, **kw)


@pytest.mark.parametrize("strategy", ["pipeline", "ddp"])
def test_two_processes_match_single_process_per_step(strategy, reference):
    ref_steps, ref_epochs = reference
    events = []
    done = run_local(_job(strategy), sink=events.append)
    steps = [e["data"]["loss"] for e in events if e["type"] == "step"]
    assert len(steps) == len(ref_steps) == 16
    assert max(abs(a - b) for a, b in zip(steps, ref_steps)) < 1e-5
    epochs = [e["data"] for e in events if e["type"] == "epoch"]
    assert abs(epochs[-1]["val_accuracy"] - ref_epochs[-1]["val_accuracy"]) < 1e-9 + 2e-3
    assert abs(epochs[-1]["train_loss"] - ref_epochs[-1]["train_loss"]) < 1e-5
    # Per-device TFLOPS, one entry per rank, every figure positive.
    devices = epochs[-1]["devices"]
    assert set(devices) == {"1", "2"}
    for figures in devices.values():
        assert figures["forward_tflops"] > 0 and figures["backward_tflops"] > 0
        assert figures["total_tflops"] > 0
    # One source of truth: every epoch's job figures are the sum of its devices' figures.
    for epoch in epochs:
        for key in ("forward_tflops", "backward_tflops", "total_tflops"):
            assert epoch[key] == pytest.approx(sum(d[key] for d in epoch["devices"].values()))
        assert 0 < epoch["wall_tflops"]
    assert done["metrics"]["total_tflops"] == epochs[-1]["total_tflops"]
    assert done["parameters_safetensors_b64"] and done["epochs_run"] == 2
    assert events[0]["type"] == "run.started" and events[0]["data"]["strategy"] == strategy
    if strategy == "ddp":  # scored on the test split like a single-process run (its summary)
        (evaluation,) = [e["data"] for e in events if e["type"] == "evaluation"]
        assert evaluation["split"] == "test" and evaluation["n_test"] > 0
        assert 0 <= evaluation["test_accuracy"] <= 1 and evaluation["test_loss"] > 0


# ---- workers and failures --------------------------------------------------------------------
@pytest.fixture
def workers(tmp_path):
    """Two real `workbench worker` processes on 127.0.0.1; always cleaned up."""
    with running_workers(tmp_path) as (ports, procs):
        yield ports, procs


def test_killed_worker_fails_the_job_quickly(workers):
    ports, procs = workers
    job = _job("pipeline").model_copy(update={
        "run": RunSpec(run_id="r_kill", architecture=ARCH.to_json(),
                       hyperparams={**HP, "epochs": 200}, device="cpu", limit=LIMIT, offline=True),
        "job_id": "t-kill",
    })
    first_epoch = threading.Event()
    killed_at: list[float] = []

    def sink(event):
        if event["type"] == "epoch" and not first_epoch.is_set():
            first_epoch.set()
            os.kill(procs[1].pid, signal.SIGKILL)  # the worker itself, mid-training
            killed_at.append(time.monotonic())

    ranks = [RemoteRank("127.0.0.1", p) for p in ports]
    with pytest.raises(JobFailed) as failure:
        run_job(job, ranks, sink=sink)
    assert killed_at, "training never reached its first epoch"
    assert time.monotonic() - killed_at[0] < 30
    message = str(failure.value)
    assert f"127.0.0.1:{ports[1]} (rank 1) left the job" in message
    # The surviving worker stopped its rank: nothing keeps running or hangs.
    deadline = time.monotonic() + 10
    while worker_health("127.0.0.1", ports[0])["jobs"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_health("127.0.0.1", ports[0])["jobs"] == []


def test_unreachable_worker_is_a_clear_error(workers):
    ports, _ = workers
    nobody = free_port()
    ranks = [RemoteRank("127.0.0.1", ports[0]), RemoteRank("127.0.0.1", nobody)]
    started = time.monotonic()
    with pytest.raises(JobFailed, match=f"could not start rank 1 on device 127.0.0.1:{nobody}.*"
                                        "unreachable"):
        run_job(_job("pipeline").model_copy(update={"job_id": "t-unreach"}), ranks)
    assert time.monotonic() - started < 30
    deadline = time.monotonic() + 10
    while worker_health("127.0.0.1", ports[0])["jobs"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_health("127.0.0.1", ports[0])["jobs"] == []


def test_failing_rank_reports_its_error():
    # A plan that does not fit the world size fails on every rank, with the reason.
    job = _job("pipeline").model_copy(update={"plan": _job("pipeline").plan[:1],
                                              "job_id": "t-badplan"})
    with pytest.raises(JobFailed, match="pipeline plan has 1 stages for 2 ranks"):
        run_local(job)
