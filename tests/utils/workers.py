"""Real ``workbench worker`` processes on 127.0.0.1 for distributed tests.

Workers need a token (``WORKBENCH_WORKER_TOKEN``). Importing this module sets the suite's one
for the test process, so every coordinator the tests start -- in process, or a ``workbench
serve`` subprocess, which inherits the environment -- presents the token these workers expect.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.utils.server import free_port
from workbench.config import WORKER_TOKEN_ENV as TOKEN_ENV
from workbench.distributed.worker import worker_health

WORKER_TOKEN = "wb-test-worker-token"
os.environ.setdefault(TOKEN_ENV, WORKER_TOKEN)


@contextmanager
def running_workers(home: Path, count: int = 2, *, token: str | None = None,
                    ) -> Iterator[tuple[list[int], list[subprocess.Popen]]]:
    """Start ``count`` workers (their token: ``token``, else the suite's), wait until each
    answers /health, always stop them."""
    ports = [free_port() for _ in range(count)]
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1",
           TOKEN_ENV: token or os.environ[TOKEN_ENV]}
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
