"""``NodeRegistry``: registered Jupyter Servers that runs can target by node id.

    nodes = NodeRegistry(store, publish=bus.publish)
    node = nodes.register("http://gpu-box:8888", token="...", region="lab")  # probes it
    nodes.list(status="online"); nodes.check_all(); nodes.remove(node.node_id)
    executor = nodes.executor(node.node_id)    # a RemoteKernelExecutor for that server

Registration probes the server (a refused token raises ``NodeAuthError``) and measures its
capabilities on the node itself (see :mod:`workbench.nodes.probe`). Health checks (``check``,
``check_all``, or the background ``start_monitor``) keep ``status`` (online / busy / offline),
``last_seen``, ``current_load`` and the server's start time (uptime) current, and publish a
``node.status`` event whenever a node's status changes. Tokens go to the owner-only token file,
never to the database or the API.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ..executors.remote_kernel import (
    JupyterServerClient,
    NodeAuthError,
    NodeError,
    RemoteKernelExecutor,
    normalize_url,
)
from ..store import NodeRecord, Store
from .probe import probe_node
from .tokens import TokenFile

log = logging.getLogger(__name__)

NODE_STATUS = "node.status"


class UnknownNode(KeyError):
    def __init__(self, node_id: str):
        super().__init__(f"node {node_id!r} not found")
        self.node_id = node_id

    def __str__(self) -> str:
        return str(self.args[0])


class NodeRegistry:
    """See the module docstring. Thread-safe."""

    def __init__(
        self,
        store: Store,
        *,
        tokens: TokenFile | None = None,
        publish: Callable[[dict[str, Any]], None] | None = None,
        probe_seconds: float = 0.2,
        timeout: float = 10.0,
    ):
        self.store = store
        self.tokens = tokens or TokenFile()
        self.publish = publish
        self.probe_seconds = probe_seconds
        self.timeout = timeout
        self._executors: dict[str, RemoteKernelExecutor] = {}
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._stop = threading.Event()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    # -- register / read / remove ---------------------------------------------------------------

    def register(
        self, url: str, token: str, *, name: str | None = None, region: str | None = None
    ) -> NodeRecord:
        """Probe the server and store it. Raises ValueError (bad or duplicate url, a host not in
        ``settings.allowed_hosts``, empty token), ``NodeAuthError`` (token refused),
        ``NodeUnreachableError``, ``NodeError``."""
        url = normalize_url(url)
        from urllib.parse import urlsplit

        from ..outbound import check_host

        check_host(urlsplit(url).hostname or "")  # OutboundRefused (a ValueError)
        if not token or not token.strip():
            raise ValueError("token must not be empty: give the Jupyter Server's token")
        existing = self.store.find_node(url=url)
        if existing is not None:
            raise ValueError(f"{url} is already registered as {existing.node_id}")
        client = JupyterServerClient(url, token.strip(), timeout=self.timeout)
        status = client.status()  # the token check: 403 -> NodeAuthError
        info = probe_node(client, seconds=self.probe_seconds)
        now = datetime.now(timezone.utc)
        node = self.store.create_node(
            url=url, name=name, region=region, status="online",
            capabilities=info["capabilities"], gpu_info=info.get("gpu_info"),
            cpu_count=info.get("cpu_count"), torch_version=info.get("torch_version"),
            workbench_version=info.get("workbench_version"), server_version=client.version(),
            performance_score=info.get("performance_score"), current_load=0.0,
            server_started_at=_parse_time(status.get("started")), last_seen=now,
        )
        self.tokens.set(node.node_id, token.strip())
        self._emit(node, previous=None, reason="registered")
        return node

    def get(self, node_id: str) -> NodeRecord:
        node = self.store.get_node(node_id)
        if node is None:
            raise UnknownNode(node_id)
        return node

    def list(
        self, *, status: str | None = None, region: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> tuple[list[NodeRecord], int]:
        """One page of nodes and the total matching the filters."""
        return (
            self.store.list_nodes(status=status, region=region, limit=limit, offset=offset),
            self.store.count_nodes(status=status, region=region),
        )

    def tasks_completed(self, node_id: str) -> int:
        return self.store.count_runs(target=node_id, state="succeeded")

    def remove(self, node_id: str) -> None:
        """Forget a node; runs still executing there are cancelled first."""
        node = self.get(node_id)
        with self._lock:
            executor = self._executors.pop(node_id, None)
        if executor is not None:
            executor.close()
        self.store.delete_node(node_id)
        self.tokens.delete(node_id)
        self._emit(node, previous=node.status, status="removed")

    # -- executing ------------------------------------------------------------------------------

    def executor(self, node_id: str) -> RemoteKernelExecutor:
        """The executor that trains on this node (one per node, reused)."""
        with self._lock:
            executor = self._executors.get(node_id)
            if executor is not None:
                return executor
        node = self.get(node_id)
        token = self.tokens.get(node_id)
        if token is None:
            raise NodeError(f"no token stored for {node_id}; remove and register it again")
        executor = RemoteKernelExecutor(
            node.url, token, node_id=node_id, timeout=self.timeout,
            on_unreachable=lambda reason: self.mark_offline(node_id, reason),
        )
        with self._lock:
            return self._executors.setdefault(node_id, executor)

    # -- health ---------------------------------------------------------------------------------

    def check(self, node_id: str) -> NodeRecord:
        """Ask the node how it is now; update and return its record."""
        node = self.get(node_id)
        token = self.tokens.get(node_id) or ""
        client = JupyterServerClient(node.url, token, timeout=self.timeout)
        try:
            status = client.status()
            kernels = client.kernels()
        except NodeError as exc:
            reason = str(exc) if not isinstance(exc, NodeAuthError) else (
                f"the node refused its stored token: {exc}")
            return self.mark_offline(node_id, reason)
        busy = sum(1 for k in kernels if k.get("execution_state") == "busy")
        with self._lock:
            executor = self._executors.get(node_id)
        running_here = bool(executor and executor.live_runs())
        new_status = "busy" if busy or running_here else "online"
        updated = self.store.update_node(
            node_id, status=new_status, last_seen=datetime.now(timezone.utc), last_error=None,
            current_load=round(busy / len(kernels), 4) if kernels else 0.0,
            server_started_at=_parse_time(status.get("started")),
        )
        assert updated is not None
        if updated.status != node.status:
            self._emit(updated, previous=node.status)
        return updated

    def mark_offline(self, node_id: str, reason: str) -> NodeRecord:
        node = self.get(node_id)
        updated = self.store.update_node(
            node_id, status="offline", last_error=reason, current_load=None
        )
        assert updated is not None
        if node.status != "offline":
            self._emit(updated, previous=node.status, reason=reason)
        return updated

    def check_all(self) -> builtins.list[NodeRecord]:
        checked = []
        for node in self.store.list_nodes(limit=10_000):
            try:
                checked.append(self.check(node.node_id))
            except UnknownNode:  # removed meanwhile
                continue
        return checked

    def start_monitor(self, interval: float = 30.0) -> None:
        """Check every node every ``interval`` seconds in a daemon thread."""
        if self._monitor is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                if getattr(self.store, "closed", False):
                    return  # the service shut down without closing us
                try:
                    self.check_all()
                except Exception:
                    log.exception("node health check failed")

        self._monitor = threading.Thread(target=loop, name="node-health", daemon=True)
        self._monitor.start()

    def close(self) -> None:
        """Stop the monitor and cancel runs still executing on nodes."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        with self._lock:
            executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            executor.close()

    # -- events ---------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Also call ``callback(event)`` for every ``node.status`` event."""
        with self._lock:
            self._listeners.append(callback)

    def _emit(
        self, node: NodeRecord, *, previous: str | None, reason: str | None = None,
        status: str | None = None,
    ) -> None:
        """Publish ``node.status``: ``{"status", "previous", "url", "reason"?}``; ``previous``
        is None for a new registration, ``status`` is "removed" when a node is forgotten."""
        data: dict[str, Any] = {"status": status or node.status, "previous": previous,
                                "url": node.url}
        if reason:
            data["reason"] = reason
        event = {"type": NODE_STATUS, "node_id": node.node_id, "time": time.time(), "data": data}
        with self._lock:
            targets = [*self._listeners, *([self.publish] if self.publish else [])]
        for target in targets:
            try:
                target(event)
            except Exception:
                log.exception("delivering %s failed", NODE_STATUS)


def _parse_time(value: Any) -> datetime | None:
    """Jupyter's ISO timestamps (``2024-01-15T10:30:00.123Z``) as aware UTC datetimes."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
