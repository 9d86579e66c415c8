"""Real ``workbench worker`` processes on 127.0.0.1 for distributed tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.utils.server import free_port
from workbench.distributed.worker import worker_health


@contextmanager
def running_workers(home: Path, count: int = 2) -> Iterator[tuple[list[int], list[subprocess.Popen]]]:
    """Start ``count`` workers, wait until each answers /health, always stop them."""
    ports = [free_port() for _ in range(count)]
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", "--port", str(p)],
                              env=env, stderr=subprocess.DEVNULL) for p in ports]
    try:
        for port in ports:
            deadline = time.monotonic() + 60
            while True:
                try:
                    worker_health("127.0.0.1", port, timeout_s=1)
                    break
                except Exception:
                    assert time.monotonic() < deadline, f"worker on {port} did not start"
                    time.sleep(0.2)
        yield ports, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(20)
