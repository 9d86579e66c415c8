"""The distributed job spec: what every rank of a torch.distributed job receives, as JSON.

It wraps the ordinary :class:`workbench.train.job.RunSpec` (architecture, hyperparameters, data)
with what is specific to a process group: the strategy, the world size, the pipeline plan and
micro-batch count, the rendezvous address and a per-rank device name used in TFLOPS reports.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..train.job import RunSpec
from .allocation import StagePlan

Strategy = Literal["ddp", "pipeline"]


class DistJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str
    strategy: Strategy
    world_size: int = Field(ge=1, le=64)
    run: RunSpec
    plan: list[dict[str, Any]] = Field(default_factory=list, description="pipeline StagePlans")
    micro_batches: int = Field(default=4, ge=1, le=1024)
    device_names: list[str] = Field(default_factory=list, description="per rank, for reports")
    normalize: tuple[float, float] | None = None  # (mean, std); None = the data set's own
    eval_batch_size: int = Field(default=8192, ge=1)
    step_events_per_epoch: int = Field(default=20, ge=0)
    timeout_s: float = Field(default=30.0, gt=0, description="collective/rendezvous timeout")

    def stage_plans(self) -> list[StagePlan]:
        return [StagePlan.from_json(p) for p in self.plan]

    def device_name(self, rank: int) -> str:
        return self.device_names[rank] if rank < len(self.device_names) else str(rank + 1)
