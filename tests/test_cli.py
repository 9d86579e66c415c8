"""The ``workbench`` command end to end, as real subprocesses with their own WORKBENCH_HOME."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from workbench.store import Store


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "WORKBENCH_HOME": str(tmp_path / "home"), "WORKBENCH_OFFLINE": "1"}


def workbench(*args, env, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_train_runs_and_sql(env, tmp_path):
    out = workbench("train", "--layers", "784,32,10", "--epochs", "2", "--limit", "600",
                    "--optimizer", "adam", "--lr", "0.003", "--offline", env=env)
    assert out.returncode == 0, out.stderr
    for word in ("run_id", "param_id", "val_accuracy", "test_accuracy", "samples_per_s",
                 "forward_tflops", "backward_tflops", "succeeded", "bundled-subset"):
        assert word in out.stdout, word

    listed = workbench("runs", env=env)
    assert listed.returncode == 0 and "succeeded" in listed.stdout

    q = workbench("sql", "--json",
                  "SELECT r.state, count(DISTINCT m.epoch) AS epochs FROM runs r "
                  "JOIN metrics m USING (run_id) WHERE m.name = 'val_accuracy' GROUP BY r.state",
                  env=env)
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout) == [{"state": "succeeded", "epochs": 2}]

    refused = workbench("sql", "DELETE FROM runs", env=env)
    assert refused.returncode == 2 and "read-only" in refused.stderr
    assert json.loads(workbench("sql", "--json", "SELECT count(*) AS n FROM runs",
                                env=env).stdout) == [{"n": 1}]


def test_architecture_and_hyperparams_files(env, tmp_path):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"input_size": 784, "layers": [
        {"type": "linear", "in": 784, "out": 16}, {"type": "tanh"},
        {"type": "linear", "in": 16, "out": 10}, {"type": "softmax"}]}))
    hp = tmp_path / "hp.json"
    hp.write_text(json.dumps({"epochs": 1, "batch_size": 32,
                              "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9}}))
    out = workbench("train", "--arch", str(arch), "--hyperparams", str(hp), "--limit", "300",
                    env=env)
    assert out.returncode == 0, out.stderr
    with Store(tmp_path / "home" / "workbench.duckdb") as store:
        (run,), _ = store.list_runs()
        assert run.hyperparams["optimizer"] == {"type": "sgd", "lr": 0.05, "momentum": 0.9,
                                                "weight_decay": 0.0, "betas": [0.9, 0.999]}
        assert run.epochs_total == 1 and run.state == "succeeded"


def test_invalid_architecture_is_a_clear_error(env):
    out = workbench("train", "--layers", "784,128,12", env=env)
    assert out.returncode == 2
    assert "layers[2]: final output is 12 but the dataset has 10 classes" in out.stderr


def test_killed_training_keeps_finished_epochs(env, tmp_path):
    """SIGKILL `workbench train` after two epochs: on reopen the run is failed 'interrupted'
    and both epochs' metrics are still there."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "train", "--layers", "784,64,10",
         "--epochs", "500", "--limit", "1500", "--offline"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    seen = ""
    deadline = time.time() + 180
    try:
        while "2/500" not in seen and time.time() < deadline:
            seen += proc.stderr.read(1) or ""
            if proc.poll() is not None:
                break
        assert "2/500" in seen, seen[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Store(tmp_path / "home" / "workbench.duckdb") as store:
        (run,), _ = store.list_runs()
        assert run.state == "failed" and run.error == "interrupted"
        epochs = {m.epoch for m in store.get_metrics(run.run_id, names=["val_accuracy"])}
        assert {1, 2} <= epochs
