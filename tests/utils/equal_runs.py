"""A run's per-epoch learning metrics over REST, and the same seeded run trained in the test
process: tests that train on another target (a kernel, Ray, after a resume) compare the two."""

from __future__ import annotations

import time
from typing import Any

from workbench import events as ev

LEARNING = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
            "test_accuracy")


def history(http, run_id: str) -> list[tuple]:
    """``(epoch, name, value)`` of the run's learning metrics, from the store (v1 SQL)."""
    names = ", ".join(f"'{n}'" for n in LEARNING)
    body = {"query": f"SELECT epoch, name, value FROM metrics WHERE run_id = '{run_id}' "
                     f"AND name IN ({names}) ORDER BY epoch, name", "limit": 1000}
    response = http.post("/api/v1/sql", json=body)
    assert response.status_code == 200, response.text
    return [tuple(row) for row in response.json()["data"]["rows"]]


def trained_here(architecture: dict[str, Any], hyperparams: dict[str, Any], *,
                 limit: int) -> list[tuple]:
    """The same seeded run trained in this process, with the threads a training process
    (worker, kernel, Ray task) uses; sorted like ``history``."""
    import torch

    from workbench.train.job import execute, set_training_threads

    events: list = []
    threads = torch.get_num_threads()
    set_training_threads()
    try:
        execute({"run_id": "r_here", "architecture": architecture, "hyperparams": hyperparams,
                 "device": "cpu", "limit": limit, "offline": True}, sink=events.append)
    finally:
        torch.set_num_threads(threads)
    return sorted((e["data"]["epoch"], name, e["data"][name]) for e in events
                  if e["type"] in (ev.EPOCH, ev.EVALUATION)
                  for name in LEARNING if name in e["data"])


def wait_until(http, run_id: str, condition, timeout: float) -> dict:
    """Poll the run until ``condition(run)``; fails if it ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        run = http.get(f"/api/runs/{run_id}").json()
        if condition(run):
            return run
        assert time.monotonic() < deadline and run["state"] in ("queued", "running"), run
        time.sleep(0.05)
