"""Sweeps whose trials train off the local workers: with target ``local-kernel`` every trial is a
run in an ipykernel process, with target ``distributed`` every trial is a 2-rank DDP run (local
rank processes); each trial ends succeeded on that target and is scored like a local trial.
(Trials on a registered node: ``test_remote_nodes.py``; on Ray: ``test_ray_target.py``.)"""

from __future__ import annotations

import pytest

from workbench.executors.registry import install

# Kernels and rank processes each import torch: generous on a loaded machine.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def service(offline_service):
    install(offline_service)  # the server's targets, as mount_v1 installs them
    return offline_service


def sweep_on(target: str, trials: int) -> dict:
    return {
        "name": f"on-{target}", "target": target, "limit": 300, "parallelism": 1,
        "space": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
        "layer_sizes": [784, 16, 10],
        "hyperparams": {"epochs": 1, "batch_size": 64, "optimizer": {"type": "adam"},
                        "seed": 0},
        "budget": {"trials": trials}, "sampler": {"type": "random", "seed": 1},
        "pruner": {"type": "none"},
    }


@pytest.mark.parametrize("target, trials", [("local-kernel", 2), ("distributed", 2)])
def test_every_trial_of_the_sweep_is_a_succeeded_run_on_its_target(service, target, trials):
    sweep = service.sweeps.create(sweep_on(target, trials))
    done = service.sweeps.wait(sweep["sweep_id"], timeout=500)
    assert done["state"] == "completed" and done["counts"]["complete"] == trials, done
    assert len(done["trials"]) == trials
    for trial in done["trials"]:
        run = service.get_run(trial["run_id"])
        assert run.state == "succeeded" and run.target == target, run
        assert trial["value"] == run.metrics["val_accuracy"]
    if target == "distributed":  # DDP over the default 2 local ranks, not one process
        events = service.store.list_events(done["trials"][0]["run_id"])
        started = next(e for e in events if e["type"] == "run.started")
        assert started["data"]["strategy"] == "ddp" and started["data"]["world_size"] == 2
