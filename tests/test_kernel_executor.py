"""LocalKernelExecutor: runs train in real ipykernel processes (jupyter_client), events stream
back live, cancel interrupts, a dying kernel fails the run keeping finished epochs, and a kernel
whose Python lacks workbench says how to install it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

from workbench import events as ev
from workbench.config import get_settings
from workbench.executors.kernel import LocalKernelExecutor
from workbench.executors.registry import LOCAL_KERNEL, ExecutorRegistry, UnknownTarget
from workbench.spec import Architecture
from workbench.store import Store
from workbench.train.job import RunSpec

ARCH = Architecture.from_layer_sizes([784, 32, 10], num_classes=10).to_json()


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_OFFLINE", "1")
    get_settings.cache_clear()
    with Store(tmp_path / "home" / "wb.duckdb") as s:
        yield s
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def executor():
    ex = LocalKernelExecutor()
    yield ex
    ex.close()


def new_spec(store: Store, epochs: int) -> RunSpec:
    hp = {"epochs": epochs, "batch_size": 64, "optimizer": {"type": "adam", "lr": 1e-3}}
    model = store.create_model(architecture=ARCH, hyperparams=hp)
    run = store.create_run(model_id=model.model_id, hyperparams=hp, epochs_total=epochs,
                           target=LOCAL_KERNEL)
    return RunSpec(run_id=run.run_id, architecture=ARCH, hyperparams=hp, limit=1000,
                   offline=True)


class Recorder:
    """A sink that keeps every event and notes whether the run had ended when epoch 1 came."""

    def __init__(self, store: Store):
        self.store = store
        self.events: list[dict] = []
        self.first_epoch = threading.Event()
        self.state_at_first_epoch: str | None = None

    def __call__(self, event: dict) -> None:
        self.store.apply_event(event)
        self.events.append(event)
        if event["type"] == ev.EPOCH and not self.first_epoch.is_set():
            self.state_at_first_epoch = self.store.get_run(event["run_id"]).state
            self.first_epoch.set()

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def terminal(self) -> list[dict]:
        return [e for e in self.events if e["type"] in ev.TERMINAL]


def test_trains_in_a_kernel_with_live_events(store, executor):
    spec = new_spec(store, epochs=2)
    rec = Recorder(store)
    handle = executor.submit(spec, rec)
    assert handle.join(timeout=240)

    assert rec.types[0] == ev.RUN_STARTED and rec.types[-1] == ev.RUN_COMPLETED
    assert [e["data"]["epoch"] for e in rec.events if e["type"] == ev.EPOCH] == [1, 2]
    assert rec.state_at_first_epoch == "running"  # epoch 1 was stored while training went on
    run = store.get_run(spec.run_id)
    assert run.state == "succeeded" and run.device == "cpu" and run.target == LOCAL_KERNEL
    assert run.param_id is not None and store.get_params(run.param_id).size_bytes > 0
    assert {m.epoch for m in store.get_metrics(spec.run_id, names=["val_accuracy"])} == {1, 2}
    assert executor.live_runs() == []


def test_cancel_interrupts_the_kernel(store, executor):
    spec = new_spec(store, epochs=1000)  # ~5 ms each: seconds to act after epoch 1
    rec = Recorder(store)
    handle = executor.submit(spec, rec)
    assert rec.first_epoch.wait(240)
    pid = executor.kernel_pid(spec.run_id)
    handle.cancel()
    assert handle.join(timeout=60)

    assert [e["type"] for e in rec.terminal()] == [ev.RUN_CANCELLED]  # not failed
    assert store.get_run(spec.run_id).state == "cancelled"
    assert pid is not None and not _alive(pid)  # the kernel was shut down afterwards


def test_kernel_death_fails_the_run_and_keeps_finished_epochs(store, executor):
    spec = new_spec(store, epochs=1000)  # ~5 ms each: seconds to act after epoch 1
    rec = Recorder(store)
    handle = executor.submit(spec, rec)
    assert rec.first_epoch.wait(240)
    pid = executor.kernel_pid(spec.run_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert handle.join(timeout=60)

    [terminal] = rec.terminal()
    assert terminal["type"] == ev.RUN_FAILED
    assert "kernel died" in terminal["data"]["error"]
    run = store.get_run(spec.run_id)
    assert run.state == "failed" and "kernel died" in run.error
    assert 1 in {m.epoch for m in store.get_metrics(spec.run_id, names=["train_loss"])}


@pytest.fixture(scope="module")
def python_without_workbench(tmp_path_factory) -> str:
    """A venv that sees this interpreter's site-packages (ipykernel, torch) through a .pth file;
    .pth files found that way are not processed, so the editable workbench install is not."""
    root = tmp_path_factory.mktemp("nowb")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site.stdout.strip(), "base.pth").write_text("\n".join(paths) + "\n")
    probe = subprocess.run([str(python), "-c", "import ipykernel, workbench"], cwd=root,
                           capture_output=True, text=True)
    assert "No module named 'workbench'" in probe.stderr, probe.stderr
    return str(python)


def test_kernel_without_workbench_says_how_to_install(store, python_without_workbench):
    spec = new_spec(store, epochs=1)
    rec = Recorder(store)
    ex = LocalKernelExecutor(python=python_without_workbench)
    try:
        assert ex.submit(spec, rec).join(timeout=240)
    finally:
        ex.close()
    [terminal] = rec.terminal()
    assert terminal["type"] == ev.RUN_FAILED
    error = terminal["data"]["error"]
    assert "pip install nn-workbench" in error and python_without_workbench in error
    assert store.get_run(spec.run_id).state == "failed"


def test_registry_picks_executors_by_target():
    targets = ExecutorRegistry()
    try:
        assert targets.get(LOCAL_KERNEL).kind == "local-kernel"
        assert targets.get("local").kind == "local"
        with pytest.raises(UnknownTarget, match="node_nope"):
            targets.get("node_nope")
    finally:
        targets.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent reaps it).
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
