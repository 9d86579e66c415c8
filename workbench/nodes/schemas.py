"""The public shape of a node (the node fields of the neurogrid API), shared by REST and CLI.

Never carries the token: ``NodeCreate`` accepts it, ``NodePublic`` has no field for it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store import NodeRecord


class NodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="the Jupyter Server's address, e.g. http://gpu-box:8888")
    token: str = Field(min_length=1, description="the Jupyter Server's token (stored owner-only)")
    name: str | None = Field(default=None, max_length=200)
    region: str | None = Field(default=None, max_length=100)


class GpuInfo(BaseModel):
    model: str
    memory: str  # "80GB"
    compute_capability: str  # "9.0"
    memory_bytes: int | None = None
    count: int | None = None


class NodePublic(BaseModel):
    id: str
    name: str
    url: str
    status: str = Field(description="online | busy | offline")
    region: str | None
    capabilities: list[str]
    gpu_info: GpuInfo | None = Field(description="None: no CUDA GPU on the node")
    cpu_count: int | None
    torch_version: str | None
    workbench_version: str | None
    server_version: str | None
    performance_score: float | None = Field(description="measured float32 matmul TFLOPS")
    current_load: float | None = Field(description="share of the node's kernels executing")
    last_seen: datetime | None
    uptime: str | None = Field(description='e.g. "15d 8h 32m"; None while offline')
    uptime_seconds: float | None
    total_tasks_completed: int
    last_error: str | None
    registered_at: datetime | None


def format_uptime(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes = int(seconds // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d {hours}h {minutes}m"


def node_public(node: NodeRecord, *, tasks_completed: int = 0) -> NodePublic:
    uptime = node.uptime_seconds()
    gpu: dict[str, Any] | None = node.gpu_info
    return NodePublic(
        id=node.node_id, name=node.name, url=node.url, status=node.status, region=node.region,
        capabilities=node.capabilities, gpu_info=GpuInfo(**gpu) if gpu else None,
        cpu_count=node.cpu_count, torch_version=node.torch_version,
        workbench_version=node.workbench_version, server_version=node.server_version,
        performance_score=node.performance_score, current_load=node.current_load,
        last_seen=node.last_seen, uptime=format_uptime(uptime),
        uptime_seconds=None if uptime is None else round(uptime, 1),
        total_tasks_completed=tasks_completed, last_error=node.last_error,
        registered_at=node.registered_at,
    )
