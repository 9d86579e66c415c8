"""``strategy: ddp`` on target ``"ray"``: the run trains as a Ray Train job (``TorchTrainer``)
of ``world_size`` workers, each a rank of the engine's own DDP loop
(:func:`workbench.distributed.ddp.train_ddp`) in the process group Ray Train formed (gloo on
CPU, NCCL on GPU). Rank 0's events go to the executor's relay actor like a single Ray task's
(:class:`~workbench.executors.ray_executor.RelayLink`), so the owner stays the one writer; a
cancel stops every rank at the end of the epoch (``run.cancelled``), or the driver task is
killed after the executor's grace time, and its Ray Train job with it.

Needs Ray Train: ``pip install "nn-workbench[ray]"`` installs ``ray[train]``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

# What `import ray.train` needs beyond Ray itself (the `train` extra), checked without
# importing them: the owner answers a request with it.
TRAIN_MODULES = ("pyarrow", "pandas", "fsspec", "requests")
TRAIN_HINT = ('strategy \'ddp\' on target \'ray\' needs Ray Train: `pip install '
              '"nn-workbench[ray]"` (it installs ray[train]; missing here: {missing})')


def ray_train_missing() -> str | None:
    """Why a DDP run cannot train on Ray here (None when Ray Train is importable)."""
    missing = [m for m in ("ray", *TRAIN_MODULES) if importlib.util.find_spec(m) is None]
    return TRAIN_HINT.format(missing=", ".join(missing)) if missing else None


def ddp_task(spec: dict[str, Any], relay: Any, use_gpu: bool) -> None:
    """The Ray task that drives one DDP run: ``TorchTrainer.fit`` of ``world_size`` workers
    (raises Ray Train's error when a worker fails; the owner reports it as ``run.failed``)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ..train.job import RunSpec
    from .distributed import dist_job

    job = dist_job(RunSpec.model_validate(spec))
    job = job.model_copy(update={"device_names": [f"ray worker {r}"
                                                  for r in range(job.world_size)]})
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"job": job.model_dump(mode="json"), "relay": relay,
                           "use_gpu": use_gpu},
        scaling_config=ScalingConfig(num_workers=job.world_size, use_gpu=use_gpu),
        # one try: a failed rank fails the run, like on the distributed target
        run_config=RunConfig(name=f"nn-workbench-{job.run.run_id}",
                             failure_config=FailureConfig(max_failures=0)),
    )
    trainer.fit()


def _train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: this rank's part of the engine's DDP loop."""
    import ray.train
    import torch

    from ..distributed.ddp import train_ddp
    from ..distributed.job import DistJob
    from ..distributed.rank import load_data
    from .ray_executor import RelayLink
    from .worker import _nan_safe

    job = DistJob.model_validate(config["job"])
    rank = ray.train.get_context().get_world_rank()
    if config["use_gpu"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    splits = load_data(job)
    if rank != 0:  # only rank 0 reports (train_ddp emits nothing on the others)
        train_ddp(job, rank, splits, device, sink=lambda event: None)
        return
    with RelayLink(job.run.run_id, config["relay"]) as link:
        train_ddp(job, rank, splits, device, _nan_safe(link.sink), should_stop=link.stop.is_set)
