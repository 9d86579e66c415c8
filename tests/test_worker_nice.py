"""``WORKBENCH_WORKER_NICE``: local training workers run at that niceness (the server keeps CPU)."""

from __future__ import annotations

import os
import threading

import psutil
import pytest

from workbench import events as ev
from workbench.executors.local import LocalExecutor
from workbench.spec import Architecture
from workbench.train.job import RunSpec

ARCH = Architecture.from_layer_sizes([784, 16, 10], num_classes=10).to_json()


def test_a_local_worker_runs_at_the_configured_niceness():
    started = threading.Event()
    ended = threading.Event()
    seen: list[dict] = []

    def sink(event: dict) -> None:
        seen.append(event)
        if event["type"] == ev.EPOCH:
            started.set()
        if event["type"] in ev.ENDS_EXECUTION:
            ended.set()
            started.set()

    env = {**os.environ, "WORKBENCH_WORKER_NICE": "7", "WORKBENCH_OFFLINE": "1"}
    executor = LocalExecutor(env=env)
    spec = RunSpec(run_id="r_nice", architecture=ARCH, hyperparams={"epochs": 500},
                   limit=200, device="cpu")
    handle = executor.submit(spec, sink)
    try:
        assert started.wait(120), "the worker never finished an epoch"
        assert not ended.is_set(), seen[-1]
        worker = psutil.Process(handle.process.pid)
        assert worker.nice() == psutil.Process().nice() + 7
    finally:
        handle.cancel()
        ended.wait(30)
        executor.close()


def test_a_niceness_outside_0_to_19_is_refused_naming_the_setting(monkeypatch):
    from pydantic import ValidationError

    from workbench.config import get_settings

    monkeypatch.setenv("WORKBENCH_WORKER_NICE", "25")
    get_settings.cache_clear()
    try:
        with pytest.raises(ValidationError, match="worker_nice"):
            get_settings()
    finally:
        get_settings.cache_clear()
