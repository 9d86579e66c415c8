"""Distributed training on torch.distributed (gloo on CPU, NCCL on GPU).

- ``allocation``: consecutive layers -> pipeline stages, balanced by FLOPs and device scores.
- ``pipeline`` / ``ddp``: one rank's training loop for each strategy.
- ``rank``: a rank as a process; ``launch``: the TCPStore rendezvous and local rank processes;
  ``coordinator``: runs a job over participants and fails fast when one goes away.
- ``worker``: ``workbench worker``, the long-lived process that runs ranks on request.
- ``trainer``: the distributed-trainer service behind ``/api`` (``api/routes/trainer.py``).
"""

from .allocation import StagePlan, allocate
from .coordinator import JobCancelled, JobFailed, run_job
from .job import DistJob
from .launch import run_local

__all__ = ["DistJob", "JobCancelled", "JobFailed", "StagePlan", "allocate", "run_job", "run_local"]
