"""One rank of a distributed job, as its own process.

    python -m workbench.distributed.rank < assignment.json

The assignment is ``{"job": DistJob, "rank": r, "store_host": h, "store_port": p}``. The rank
joins the coordinator's TCPStore, forms the process group through it (gloo on CPU, NCCL on
CUDA), loads its data, trains its part and sends events back through the store. It exits when
its parent (a worker or a launcher) goes away, so a killed worker leaves no orphan behind.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .. import events as ev
from .channel import StoreSink
from .job import DistJob


def job_store(host: str, port: int, job_id: str, timeout_s: float) -> dist.Store:
    """A client of the coordinator's TCPStore, scoped to one job."""
    store = dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=timeout_s))
    return dist.PrefixStore(f"job/{job_id}/", store)


def rank_device(name: str, rank: int) -> torch.device:
    """``auto``: one GPU per rank, round robin over the visible ones; else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def load_data(job: DistJob) -> Any:
    from ..data import load_splits
    from ..train.job import load_run_data

    _, hp = job.run.parsed()
    if job.normalize is None or job.run.data_url:
        return load_run_data(job.run, hp)
    return load_splits(job.run.dataset, train_split=hp.train_split, seed=hp.seed,
                       normalize=job.normalize, offline=job.run.offline, progress=False,
                       limit=job.run.limit)


def run_rank(job: DistJob, rank: int, store: dist.Store) -> int:
    """Train this rank's part; failures become ``run.failed`` events. Returns an exit code."""
    from .ddp import train_ddp
    from .pipeline import train_pipeline

    sink = StoreSink(store, rank)
    try:
        device = rank_device(job.run.device, rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=dist.PrefixStore("pg/", store), rank=rank, world_size=job.world_size,
            timeout=timedelta(seconds=job.timeout_s),
        )
        splits = load_data(job)
        strategy = train_pipeline if job.strategy == "pipeline" else train_ddp
        strategy(job, rank, splits, device, sink)
        return 0
    except Exception as exc:
        sink(ev.make_event(ev.RUN_FAILED, job.run.run_id, rank=rank,
                           error=f"rank {rank}: {type(exc).__name__}: {exc}"))
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _exit_with_parent(interval_s: float = 0.5) -> None:
    """Leave as soon as the parent process dies (it can be SIGKILLed and tell no one)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def main() -> int:
    _exit_with_parent()
    assignment = json.load(sys.stdin)
    job = DistJob.model_validate(assignment["job"])
    store = job_store(assignment["store_host"], int(assignment["store_port"]), job.job_id,
                      job.timeout_s)
    return run_rank(job, int(assignment["rank"]), store)


if __name__ == "__main__":
    sys.exit(main())
