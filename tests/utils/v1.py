"""Helpers for the ``/api/v1`` tests: tiny Cortex jobs and waiting for them (and for runs)."""

from __future__ import annotations

import time
from typing import Any

import httpx

CORTEX_MODEL = {"input_dim": 784, "hidden_dims": [32], "output_dim": 10}


def submit_job(client: httpx.Client, *, epochs: int = 1, limit: int = 1000,
               **extra: Any) -> dict[str, Any]:
    body = {"neural_model_config": CORTEX_MODEL,
            "training_config": {"max_epochs": epochs, "batch_size": 64, "learning_rate": 1e-3,
                                "validation_split": 0.2},
            "limit": limit, **extra}
    response = client.post("/api/v1/jobs/submit", json=body)
    assert response.status_code == 202, response.text
    return response.json()["data"]


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll the job status until it ends; returns the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/v1/jobs/{job_id}/status").json()["data"]
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        assert time.monotonic() < deadline, f"job {job_id} did not end: {status}"
        time.sleep(0.2)


def wait_run(client: httpx.Client, run_id: str, timeout: float = 180) -> dict[str, Any]:
    """Poll ``GET /api/runs/{id}`` until the run ends; returns its last state."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} did not end: {run}"
        time.sleep(0.2)
