"""Where this server may reach on a caller's behalf: the one outbound policy.

Every host a request names -- a fine-tune ``dataset_url``, Cortex ``global_node_urls``, a
distributed-trainer device ``ip``, a node's ``url`` -- passes :func:`check_host` first, and every
``file://`` data URL passes :func:`data_path`. Both answer with one message per kind of refusal,
the same whether the target is missing, outside the policy, refusing connections or silent, so
the API cannot be used to map a network or a file system.

- ``settings.allowed_hosts`` (``WORKBENCH_ALLOWED_HOSTS``): names (``data.lab``), suffixes
  (``.lab.example.org``), IP addresses or networks (``10.0.0.0/8``), or ``*`` (any host except
  link-local and unspecified addresses, which must be listed explicitly). Default: loopback only.
- ``settings.file_roots`` (``WORKBENCH_DATA_ROOTS``, default the data dir): the directories a
  ``file://`` URL may point into, checked after resolving symlinks.

:func:`opener` builds the urllib opener that fetches such URLs: no environment proxy for
loopback hosts, and every redirect re-checked against the policy (an allowed host cannot bounce
a request to a forbidden one).

Standard library only (the core must import on a bare torch box).
"""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FETCH_FAILED",
    "NOT_ALLOWED",
    "OutboundRefused",
    "check_host",
    "check_url",
    "data_path",
    "host_allowed",
    "is_host",
    "opener",
]

NOT_ALLOWED = "not allowed"
FETCH_FAILED = "could not fetch"
FILE_REFUSED = ("file:// URLs must name an existing file or directory under the server's data "
                "roots (WORKBENCH_DATA_ROOTS)")

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(ValueError):
    """A host or path the policy refuses (``str`` is the whole, probe-free message)."""


def _ip(host: str) -> _IPAddress | None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_host(value: str) -> bool:
    """An IP address or an RFC 1123 host name (what a device ``ip`` may be), nothing else."""
    if not isinstance(value, str) or not value or value != value.strip():
        return False
    if _ip(value) is not None:
        return True
    # All-numeric dotted names ("1.2.3", "2130706433") are address forms, not names.
    if re.fullmatch(r"[0-9.]+", value) or value.lower().startswith("0x"):
        return False
    return bool(_HOSTNAME.match(value))


def host_allowed(host: str, allowed: Sequence[str] | None = None) -> bool:
    """Whether ``host`` (a name or an IP literal, as a URL spells it) is on the allowlist."""
    if allowed is None:
        from .config import get_settings

        allowed = get_settings().allowed_hosts
    host = (host or "").strip().rstrip(".").lower()
    if not host or not is_host(host.strip("[]")):
        return False
    address = _ip(host)
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            if address is None or not (address.is_link_local or address.is_unspecified
                                       or address.is_multicast):
                return True
            continue
        if address is not None:
            try:
                network = ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                continue
            if address.version == network.version and address in network:
                return True
            continue
        if entry.startswith("*."):
            entry = entry[1:]
        if entry.startswith("."):
            if host.endswith(entry) or host == entry[1:]:
                return True
        elif host == entry.rstrip("."):
            return True
    return False


def check_host(host: str, *, what: str = "host") -> None:
    """Raise :class:`OutboundRefused` unless ``host`` is allowed."""
    if not host_allowed(host):
        raise OutboundRefused(f"{what} {host!r} is {NOT_ALLOWED} (WORKBENCH_ALLOWED_HOSTS)")


def check_url(url: str, *, schemes: Sequence[str] = ("http", "https")) -> urllib.parse.SplitResult:
    """An http(s) URL whose host is allowed (OutboundRefused otherwise)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise OutboundRefused(f"only {', '.join(s + '://' for s in schemes)} URLs with a host "
                              "are allowed")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise OutboundRefused("the URL has an invalid port") from None
    check_host(parts.hostname, what="host")
    return parts


def is_loopback(host: str) -> bool:
    host = (host or "").strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    address = _ip(host)
    return address is not None and address.is_loopback


# ---- file:// ---------------------------------------------------------------------------------
def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def data_path(url: str, roots: Sequence[Path] | None = None) -> Path:
    """The resolved local path of a ``file://`` URL inside the data roots.

    A path outside the roots, a missing one and one that escapes through a symlink all get the
    same :class:`OutboundRefused` message (nothing tells them apart)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost") or parts.query:
        raise OutboundRefused(FILE_REFUSED)
    if roots is None:
        from .config import get_settings

        roots = get_settings().file_roots
    raw = urllib.request.url2pathname(parts.path)
    try:
        path = Path(os.path.realpath(raw))
        resolved_roots = [Path(os.path.realpath(r)) for r in roots]
        inside = any(_under(path, root) for root in resolved_roots)
        exists = path.exists()
    except (OSError, ValueError):
        raise OutboundRefused(FILE_REFUSED) from None
    if not inside or not exists:
        raise OutboundRefused(FILE_REFUSED)
    return path


def within_roots(path: Path, roots: Sequence[Path] | None = None) -> bool:
    """Whether an existing ``path`` (after resolving symlinks) is inside the data roots."""
    if roots is None:
        from .config import get_settings

        roots = get_settings().file_roots
    real = Path(os.path.realpath(path))
    return any(_under(real, Path(os.path.realpath(r))) for r in roots)


# ---- fetching ------------------------------------------------------------------------------------
class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an http(s) URL whose host is allowed."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(url: str) -> urllib.request.OpenerDirector:
    """A urllib opener for an allowed ``url`` (check it with :func:`check_url` first)."""
    handlers: list[Any] = [_CheckedRedirects()]
    if is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        # A proxy from the environment must not intercept a local server (tests, LAN caches).
        handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)
