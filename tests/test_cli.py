"""The ``workbench`` command end to end, as real subprocesses with their own WORKBENCH_HOME.

Every command goes through the front door: the first one starts an owner of the home on demand
(a detached ``workbench serve --on-demand``), later ones reuse it; ``workbench stop`` ends it.
"""

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


def stopped(env):
    """Stop the home's owner (so the test may open the store itself); returns the home."""
    out = workbench("stop", env=env)
    assert out.returncode == 0, out.stderr
    return env["WORKBENCH_HOME"]


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


SUMMARY = ("val_loss", "val_accuracy", "test_loss", "test_accuracy", "forward_tflops",
           "backward_tflops")


def summary_rows(stdout: str) -> dict[str, str]:
    """The summary table's ``name value`` rows."""
    return dict(line.split(None, 1) for line in stdout.splitlines() if len(line.split()) >= 2)


def test_ddp_run_summary_has_test_and_validation_metrics_and_the_split(env):
    """The README's promise for every target: torch.distributed ranks too."""
    out = workbench("train", "--layers", "784,32,10", "--epochs", "1", "--limit", "300",
                    "--strategy", "ddp", "--offline", env=env)
    assert out.returncode == 0, out.stderr
    rows = summary_rows(out.stdout)
    assert rows["target"].strip() == "distributed" and "as ddp ranks" in out.stderr
    for name in SUMMARY:
        assert float(rows[name]) > 0, (name, out.stdout)
    assert "bundled-subset" in rows["dataset"]
    stopped(env)


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
    stopped(env)
    with Store(tmp_path / "home" / "workbench.duckdb") as store:
        (run,), _ = store.list_runs()
        assert run.hyperparams["optimizer"] == {"type": "sgd", "lr": 0.05, "momentum": 0.9,
                                                "weight_decay": 0.0, "betas": [0.9, 0.999]}
        assert run.epochs_total == 1 and run.state == "succeeded"


def test_invalid_architecture_is_a_clear_error(env):
    out = workbench("train", "--layers", "784,128,12", env=env)
    assert out.returncode == 2
    assert "layers[2]: final output is 12 but the dataset has 10 classes" in out.stderr


def _read_until(proc, marker, timeout=180):
    seen = ""
    deadline = time.time() + timeout
    while marker not in seen and time.time() < deadline:
        seen += proc.stderr.read(1) or ""
        if proc.poll() is not None:
            break
    assert marker in seen, seen[-2000:]
    return seen


def test_ctrl_c_cancels_the_run(env):
    """Ctrl-C in `workbench train` cancels the run in the owner (not just the client)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "train", "--layers", "784,64,10",
         "--epochs", "500", "--limit", "1500", "--offline"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A suite started in the background (`cmd &` without job control, nohup) inherits an
        # ignored SIGINT, and Python then installs no Ctrl-C handler: give the CLI a terminal's.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _read_until(proc, "2.0/500")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "cancelled" in out
    (run,) = json.loads(workbench("runs", "--json", env=env).stdout)
    assert run["state"] == "cancelled" and run["epoch"] >= 2


def test_killed_owner_fails_its_run_and_keeps_finished_epochs(env, tmp_path):
    """kill -9 the process that owns the store mid-run: the next face takes over, the run is
    failed with a reason naming the dead owner, and its finished epochs are still there."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "train", "--layers", "784,64,10",
         "--epochs", "500", "--limit", "1500", "--offline"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        # The bar reaches 2.0 at epoch 2's last step, before its validation metrics are
        # stored: wait until the owner has them, so "finished epochs" means epochs 1 and 2.
        _read_until(proc, "2.0/500")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            q = workbench("sql", "--json", "SELECT max(epoch) AS e FROM metrics WHERE name = "
                          "'val_accuracy'", env=env)
            if q.returncode == 0 and (json.loads(q.stdout)[0]["e"] or 0) >= 2:
                break
            time.sleep(0.2)
        owner = json.loads((tmp_path / "home" / "owner.json").read_text())
        os.kill(owner["pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)  # the client notices and stops following
    finally:
        proc.kill()
        proc.wait()
    listed = workbench("runs", "--json", env=env)  # a new owner is started on demand
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)
    assert run["state"] == "failed", run
    assert f"pid {owner['pid']}" in run["error"] and "died" in run["error"], run["error"]
    q = workbench("sql", "--json", "SELECT DISTINCT epoch FROM metrics WHERE name = "
                  "'val_accuracy' ORDER BY epoch", env=env)
    assert {1, 2} <= {row["epoch"] for row in json.loads(q.stdout)}, q.stdout
    new_owner = json.loads((tmp_path / "home" / "owner.json").read_text())
    assert new_owner["pid"] != owner["pid"]


def test_keys_create_list_revoke(env):
    created = workbench("keys", "create", "--name", "ci", "--scopes", "read,train", "--json",
                        env=env)
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key"].startswith("wb_") and key["permissions"] == ["read", "train"]
    listed = json.loads(workbench("keys", "list", "--json", env=env).stdout)
    assert {k["key_id"]: k["status"] for k in listed}[key["key_id"]] == "active"
    assert all("key" not in k for k in listed)  # secrets are shown once, never listed
    assert workbench("keys", "revoke", key["key_id"], env=env).returncode == 0
    listed = json.loads(workbench("keys", "list", "--json", env=env).stdout)
    assert {k["key_id"]: k["status"] for k in listed}[key["key_id"]] == "revoked"
    bad = workbench("keys", "revoke", "key_missing", env=env)
    assert bad.returncode == 2 and "not found" in bad.stderr
