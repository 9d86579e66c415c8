"""What a request asks for -> where a run goes: ``(target, spec_overrides)`` for
``Workbench.start_run``.

    target, overrides = choose("local", strategy="ddp", world_size=2)
    # -> ("distributed", {"strategy": "ddp", "world_size": 2})
    target, overrides = from_node_urls(service, ["http://10.0.0.5:5001", "http://10.0.0.6:5001"])

``choose`` checks that the strategy fits the target (a single-process target cannot run DDP).
``from_node_urls`` is the Cortex ``global_node_urls`` dispatch: the URL of a registered node
(a Jupyter Server in the node registry) trains on that node; URLs of running ``workbench worker``
processes train with DDP, one rank per worker. Errors are :class:`TargetError` naming the
request field (``target``, ``strategy``, ``world_size``, ``global_node_urls[i]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..outbound import OutboundRefused, check_host
from .distributed import DEFAULT_WORLD_SIZE, DISTRIBUTED
from .ray_ddp import ray_train_missing
from .ray_executor import RAY, ray_missing
from .registry import LOCAL

if TYPE_CHECKING:
    from ..service import Workbench

STRATEGIES = ("single", "ddp", "pipeline")
MAX_RAY_WORKERS = 64  # a DistJob's world size bound; the cluster's CPUs are checked at start
WORKER_TIMEOUT_S = 3.0  # a worker's /health answers in milliseconds


class TargetError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def choose(target: str | None, *, strategy: str = "single",
           world_size: int | None = None) -> tuple[str, dict[str, Any]]:
    """The target and RunSpec overrides of a run asked to train with ``strategy``."""
    if strategy not in STRATEGIES:
        raise TargetError("strategy", f"must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    check_available(target)
    if strategy == "single" and target == DISTRIBUTED:
        strategy = "ddp"  # the target named alone: DDP over local ranks
    if strategy == "single":
        if world_size not in (None, 1):
            raise TargetError("world_size", "more than one rank needs strategy 'ddp' or "
                              "'pipeline'")
        return target or LOCAL, {}
    if target == RAY:
        return RAY, ray_ddp_overrides(strategy, world_size)
    if target not in (None, LOCAL, DISTRIBUTED):
        raise TargetError("target", f"strategy {strategy!r} runs on the {DISTRIBUTED!r} target "
                          f"(local rank processes), not on {target!r}; use global_node_urls "
                          "for workbench workers")
    size = DEFAULT_WORLD_SIZE if world_size is None else world_size
    check_local_world_size(size)
    return DISTRIBUTED, {"strategy": strategy, "world_size": size}


def ray_ddp_overrides(strategy: str, world_size: int | None) -> dict[str, Any]:
    """A DDP run on Ray (a Ray Train job of ``world_size`` workers): its RunSpec overrides."""
    if strategy != "ddp":
        raise TargetError("strategy", f"strategy {strategy!r} is not available on target "
                          f"{RAY!r} (Ray trains 'single' and 'ddp' runs); use target "
                          f"{DISTRIBUTED!r}")
    if missing := ray_train_missing():
        raise TargetError("strategy", missing)
    size = DEFAULT_WORLD_SIZE if world_size is None else world_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_RAY_WORKERS:
        raise TargetError("world_size", f"must be between 1 and {MAX_RAY_WORKERS} (Ray Train "
                          f"workers), got {size!r}")
    return {"strategy": strategy, "world_size": size}


def check_available(target: str | None) -> None:
    """A built-in target whose optional dependency is missing (``ray``) fails now, saying what
    to install, instead of storing a run that could only fail."""
    if target == RAY and (missing := ray_missing()):
        raise TargetError("target", missing)


def check_local_world_size(size: int) -> None:
    """Local ranks are processes on this machine: at most ``limits.world_size_cap`` of them
    (``WORKBENCH_MAX_WORLD_SIZE``, default the CPU count)."""
    from ..config import get_settings

    cap = get_settings().limits.world_size_cap
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= cap:
        raise TargetError("world_size", f"must be between 1 and {cap} (the local ranks this "
                          f"machine runs: WORKBENCH_MAX_WORLD_SIZE, default its CPU count), "
                          f"got {size!r}")


def _is_ready_worker(health: Any) -> bool:
    """A workbench worker's ``/health``: ``{"status": "ok", "device", "score_tflops", ...}``."""
    return (isinstance(health, dict) and health.get("status") == "ok"
            and "score_tflops" in health and "device" in health)


def _http_form(url: str) -> str:
    """ws(s):// -> http(s)://, no trailing slash: how node URLs are stored."""
    parts = urlsplit(url.strip())
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def from_node_urls(service: Workbench, urls: list[str], *,
                   strategy: str = "ddp") -> tuple[str, dict[str, Any]]:
    """Resolve Cortex ``global_node_urls`` (checked now, so a bad URL is a submit-time error).

    - one URL of a registered node -> that node's id as the target;
    - URLs of running ``workbench worker``s -> ``distributed`` with one rank per worker
      (``strategy`` ddp, or pipeline).
    """
    from ..distributed.worker import WorkerUnreachable, worker_health

    if not urls:
        raise TargetError("global_node_urls", "give at least one URL")
    seen: dict[str, int] = {}
    nodes: list[tuple[int, str]] = []
    workers: list[str] = []
    for i, url in enumerate(urls):
        field = f"global_node_urls[{i}]"
        http = _http_form(url)
        if http in seen:
            raise TargetError(field, f"{url} is listed twice (also global_node_urls[{seen[http]}])")
        seen[http] = i
        node = service.store.find_node(url=http)
        if node is not None:
            nodes.append((i, node.node_id))
            continue
        parts = urlsplit(http)
        if parts.scheme != "http" or parts.path or parts.port is None:
            raise TargetError(field, f"{url} is not a registered node (see GET /api/v1/nodes) "
                              "nor a workbench worker address (http://host:port)")
        host = parts.hostname or ""
        try:
            check_host(host)
        except OutboundRefused as exc:
            raise TargetError(field, f"{url} is not a registered node, and {exc}") from None
        try:
            health = worker_health(host, parts.port, timeout_s=WORKER_TIMEOUT_S)
        except (WorkerUnreachable, RuntimeError, ValueError):
            health = None
        # One message whatever happened (refused, timeout, an HTTP error, some other service's
        # JSON): nothing of the remote answer is echoed.
        if not _is_ready_worker(health):
            raise TargetError(field, f"{url} is not a registered node, and no ready workbench "
                              f"worker answers there; start one with `workbench worker --port "
                              f"{parts.port}` or register the node first")
        workers.append(f"{host}:{parts.port}")
    if nodes:
        if len(urls) > 1:
            raise TargetError("global_node_urls", f"global_node_urls[{nodes[0][0]}] is a "
                              "registered node, which trains a job by itself: give exactly one "
                              "node URL, or only workbench worker URLs for data-parallel training")
        return nodes[0][1], {}
    if strategy not in ("ddp", "pipeline"):
        raise TargetError("strategy", "workbench workers train with strategy 'ddp' or 'pipeline'")
    return DISTRIBUTED, {"strategy": strategy, "world_size": len(workers), "workers": workers}
