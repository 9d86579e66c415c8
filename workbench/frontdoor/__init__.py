"""The front door: how every face finds (or starts) the one process that owns a store.

See :mod:`workbench.frontdoor.connect` (faces) and :mod:`workbench.frontdoor.owner_file`
(what the owner publishes).
"""

from .connect import (
    OwnerUnavailable,
    connect,
    find_owner,
    http_client,
    start_owner,
    stop_owner,
)
from .owner_file import OwnerInfo, live_owner, read_owner

__all__ = ["OwnerInfo", "OwnerUnavailable", "connect", "find_owner", "http_client", "live_owner", "read_owner",
           "start_owner", "stop_owner"]
