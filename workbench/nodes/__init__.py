"""Registered compute nodes: Jupyter Servers that runs can target by node id.

``NodeRegistry`` registers (probing capabilities on the node), lists, health-checks and removes
nodes, and hands out a ``RemoteKernelExecutor`` per node. See ``registry.py``.

Names resolve lazily, so ``workbench nodes --help`` does not import torch or jupyter_client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..executors.remote_kernel import NodeAuthError, NodeError, NodeUnreachableError
    from .registry import NODE_STATUS, NodeRegistry, UnknownNode
    from .schemas import NodeCreate, NodePublic, node_public
    from .tokens import TokenFile

_EXPORTS = {
    "NodeAuthError": "..executors.remote_kernel",
    "NodeError": "..executors.remote_kernel",
    "NodeUnreachableError": "..executors.remote_kernel",
    "NODE_STATUS": ".registry",
    "NodeRegistry": ".registry",
    "UnknownNode": ".registry",
    "NodeCreate": ".schemas",
    "NodePublic": ".schemas",
    "node_public": ".schemas",
    "TokenFile": ".tokens",
}

__all__ = [
    "NODE_STATUS",
    "NodeAuthError",
    "NodeCreate",
    "NodeError",
    "NodePublic",
    "NodeRegistry",
    "NodeUnreachableError",
    "TokenFile",
    "UnknownNode",
    "node_public",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
