"""Choosing an executor by a run's target: ``"local"``, ``"local-kernel"``, ``"distributed"``
(``strategy: ddp | pipeline`` specs), ``"ray"`` (a Ray cluster; the ``ray`` extra) or a node id.

    targets = ExecutorRegistry(nodes=NodeRegistry(store))
    targets.get("local-kernel").submit(spec, sink)
    targets.get("node_1a2b3c4d5e6f").submit(spec, sink)     # a registered Jupyter Server

    install(service)    # once per Workbench: start_run(model_id, target=...) then accepts every
                        # target above, and follows nodes registered or removed later

Executors are built on first use and reused; ``close`` releases them all.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .base import Executor
from .ray_executor import RAY, ray_missing  # Ray tasks: pip install "nn-workbench[ray]"

if TYPE_CHECKING:
    from ..nodes import NodeRegistry
    from ..service import Workbench

LOCAL = "local"
LOCAL_KERNEL = "local-kernel"
DISTRIBUTED = "distributed"  # strategy ddp | pipeline over torch.distributed ranks
BUILT_IN = (LOCAL, LOCAL_KERNEL, DISTRIBUTED, RAY)


NOT_INSTALLED = "not installed"  # the status of a built-in target whose extra is missing


class UnknownTarget(ValueError):
    def __init__(self, target: str, known: list[str]):
        super().__init__(
            f"target: unknown target {target!r}; use {LOCAL!r}, {LOCAL_KERNEL!r}, "
            f"{DISTRIBUTED!r}, {RAY!r} or a registered node id (known: {', '.join(known) or 'none'})"
        )
        self.target = target


def _local() -> Executor:
    from .local import LocalExecutor

    return LocalExecutor()


def _local_kernel() -> Executor:
    from .kernel import LocalKernelExecutor

    return LocalKernelExecutor()


def _distributed() -> Executor:
    from .distributed import DistributedExecutor

    return DistributedExecutor()


def _ray() -> Executor:
    from .ray_executor import RayExecutor

    if missing := ray_missing():
        raise RuntimeError(missing)
    return RayExecutor()


class ExecutorRegistry:
    """target -> executor. Thread-safe."""

    def __init__(self, *, nodes: NodeRegistry | None = None):
        self.nodes = nodes
        self._factories: dict[str, Callable[[], Executor]] = {
            LOCAL: _local, LOCAL_KERNEL: _local_kernel, DISTRIBUTED: _distributed, RAY: _ray,
        }
        self._built: dict[str, Executor] = {}
        self._lock = threading.Lock()
        self._closed = False

    def register(self, target: str, executor: Executor | Callable[[], Executor]) -> None:
        """Add (or replace) a target: an executor, or a factory called on first use."""
        with self._lock:
            self._built.pop(target, None)
            if isinstance(executor, Executor):
                self._built[target] = executor
            else:
                self._factories[target] = executor

    def get(self, target: str) -> Executor:
        """The executor for ``target`` (``UnknownTarget`` if there is none)."""
        with self._lock:
            if target in self._built:
                return self._built[target]
            factory = self._factories.get(target)
            if factory is not None:
                self._built[target] = factory()
                return self._built[target]
        if self.nodes is not None and self.nodes.store.get_node(target) is not None:
            return self.nodes.executor(target)  # the node registry caches one per node
        raise UnknownTarget(target, self.targets())

    def targets(self) -> list[str]:
        """Every target a run may name now: the built-in ones, then node ids."""
        with self._lock:
            names = list(dict.fromkeys([*self._factories, *self._built]))
        if self.nodes is not None:
            names += [n.node_id for n in self.nodes.store.list_nodes(limit=10_000)]
        return names

    def describe(self) -> list[dict[str, Any]]:
        """Targets for pickers: ``{"target", "kind", "label", "status", "gpu"}``."""
        out: list[dict[str, Any]] = [
            {"target": LOCAL, "kind": "local", "label": "this machine (subprocess)",
             "status": "online", "gpu": None},
            {"target": LOCAL_KERNEL, "kind": "local-kernel",
             "label": "this machine (Jupyter kernel)", "status": "online", "gpu": None},
            {"target": DISTRIBUTED, "kind": "distributed",
             "label": "torch.distributed ranks (DDP, 2 local ranks by default)", "status": "online", "gpu": None},
            {"target": RAY, "kind": "ray", "label": _ray_label(),
             "status": NOT_INSTALLED if ray_missing() else "online", "gpu": None},
        ]
        if self.nodes is not None:
            for node in self.nodes.store.list_nodes(limit=10_000):
                gpu = (node.gpu_info or {}).get("model")
                out.append({"target": node.node_id, "kind": "node",
                            "label": f"{node.name} ({gpu or 'CPU'})", "status": node.status,
                            "gpu": gpu})
        return out

    def close(self) -> None:
        """Close every executor built here and the node registry (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            built, self._built = list(self._built.values()), {}
        for executor in built:
            executor.close()
        if self.nodes is not None:
            self.nodes.close()


def _ray_label() -> str:
    from ..config import get_settings

    if ray_missing():
        return "Ray (not installed: pip install \"nn-workbench[ray]\")"
    address = get_settings().ray_address
    return f"Ray cluster at {address}" if address else "Ray (a local Ray on this machine)"


# One registry per service, without adding state to the service object itself.
_installed: weakref.WeakKeyDictionary[Any, ExecutorRegistry] = weakref.WeakKeyDictionary()
_install_lock = threading.Lock()


def install(
    service: Workbench, *, nodes: NodeRegistry | None = None,
    monitor_interval: float | None = None,
) -> ExecutorRegistry:
    """Let ``service.start_run(..., target=...)`` use ``local-kernel`` and every registered node
    (idempotent: a second call returns the first registry). Node executors are registered now
    and whenever a node is registered later; ``node.status`` events go to ``service.bus``.
    ``monitor_interval``: also health-check every node that often (seconds)."""
    from ..nodes import NodeRegistry

    with _install_lock:
        if service in _installed:
            return _installed[service]
        nodes = nodes or NodeRegistry(service.store, publish=service.bus.publish)
        registry = ExecutorRegistry(nodes=nodes)
        _installed[service] = registry

    service.register_executor(LOCAL_KERNEL, _LazyExecutor(registry, LOCAL_KERNEL))
    service.register_executor(DISTRIBUTED, _LazyExecutor(registry, DISTRIBUTED))
    service.register_executor(RAY, _LazyExecutor(registry, RAY))  # without Ray: a clear 422
    for node in nodes.store.list_nodes(limit=10_000):
        service.register_executor(node.node_id, _LazyExecutor(registry, node.node_id))

    def follow(event: dict[str, Any]) -> None:
        if event.get("type") == "node.status" and event["data"].get("previous") is None:
            node_id = event["node_id"]
            service.register_executor(node_id, _LazyExecutor(registry, node_id))

    nodes.subscribe(follow)
    if monitor_interval:
        nodes.start_monitor(monitor_interval)
    return registry


def registry_of(service: Workbench) -> ExecutorRegistry | None:
    """The registry ``install`` attached to ``service`` (None if not installed)."""
    return _installed.get(service)


class _LazyExecutor:
    """Stands in for a target's executor in the service: resolves it at submit time, so a node
    that was removed fails its run with a clear reason instead of using a stale connection."""

    def __init__(self, registry: ExecutorRegistry, target: str):
        self._registry = registry
        self.target = target
        self.kind = target if target in BUILT_IN else "node"

    def submit(self, spec, sink):  # type: ignore[no-untyped-def]
        return self._registry.get(self.target).submit(spec, sink)

    def close(self) -> None:
        """The registry owns the real executors: closing the service closes them."""
        self._registry.close()
