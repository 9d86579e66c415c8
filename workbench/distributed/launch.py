"""Starting ranks and holding the rendezvous.

- :class:`Rendezvous`: the coordinator's ``TCPStore`` (master). Ranks form their process group
  through it and send their events back through it (:mod:`workbench.distributed.channel`).
- :class:`RankProcess`: one rank as a child process (``python -m workbench.distributed.rank``),
  used by the local launcher and by ``workbench worker`` alike.
- :func:`run_local`: a whole job on this machine, one process per rank (tests, benchmarks,
  ``strategy: ddp | pipeline`` runs of the native API).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from .. import events as ev
from .job import DistJob


class Rendezvous:
    """A TCPStore master on a free port; ``client_store(job_id)`` is the coordinator's view of
    one job's keys. Listens on every interface so remote workers can reach it."""

    def __init__(self, *, timeout_s: float = 30.0, port: int = 0):
        self.store = dist.TCPStore("0.0.0.0", port, is_master=True, wait_for_workers=False,
                                   timeout=timedelta(seconds=timeout_s), use_libuv=True)
        self.port = int(self.store.port)

    def job_store(self, job_id: str) -> dist.Store:
        return dist.PrefixStore(f"job/{job_id}/", self.store)


def assignment(job: DistJob, rank: int, store_host: str, store_port: int) -> dict[str, Any]:
    return {"job": job.model_dump(mode="json"), "rank": rank, "store_host": store_host,
            "store_port": store_port}


class RankProcess:
    """One rank running in a child process; stderr is kept (last lines go into errors)."""

    def __init__(self, assignment: dict[str, Any], *, env: dict[str, str] | None = None):
        self.rank = int(assignment["rank"])
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.distributed.rank"],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(assignment).encode())
        self.proc.stdin.close()

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 5) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 2.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class LocalRank:
    """A coordinator participant backed by a :class:`RankProcess` on this machine."""

    def __init__(self, name: str):
        self.name = name
        self.process: RankProcess | None = None

    def start(self, work: dict[str, Any]) -> None:
        self.process = RankProcess(work)

    def gone(self) -> str | None:
        """None while running or after a clean exit; else why it is gone."""
        code = None if self.process is None else self.process.returncode
        if code is None or code == 0:
            return None
        tail = self.process.log_tail() if self.process else ""
        return describe_exit(code) + (f" ({tail.splitlines()[-1]})" if tail else "")

    def finished(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def run_local(job: DistJob, *, sink: ev.Sink | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run ``job`` with ``job.world_size`` local rank processes; returns the ``run.completed``
    data (raises :class:`~workbench.distributed.coordinator.JobFailed`)."""
    from .coordinator import run_job

    ranks = [LocalRank(f"local rank {r}") for r in range(job.world_size)]
    return run_job(job, ranks, sink=sink, store_host="127.0.0.1", **kwargs)
