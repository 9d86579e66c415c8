"""Permission scopes and per-key rate limits of ``/api/v1``, on top of the key ring of
``workbench.auth``.

Scopes: ``read`` < ``train`` < ``admin``, defined with every API family's policy in
``workbench.api.policy``. ``require("train")`` is that policy's dependency in this family's
shape: 401 AUTH_INVALID for a missing, unknown, revoked or expired key (the message says
which), 403 FORBIDDEN for a key without the scope.

``RateLimitMiddleware`` (pure ASGI, every ``/api`` HTTP request of every family) counts
requests per key (per client address for requests without a valid key) in fixed one-minute
windows against the key's limit (``settings.rate_limits``: its own ``rate_limit``, else its
tier's, else the default tier's — the conventions' Free 60/min), adds
``X-RateLimit-Limit/Remaining/Reset`` to every response (``X-API-Version`` under ``/api/v1``)
and answers 429 past the limit (with ``Retry-After``, in the family's error shape), before
any route runs. The server's own credentials are on the ``owner`` tier (effectively
unlimited), as are ``--trainer-open`` loopback requests; other requests without a valid key
count per client address on the ``anonymous`` tier.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...auth import SCOPES, KeyRing, granted, hash_key, parse_permissions
from ...config import ANONYMOUS_TIER, OWNER_TIER, RateLimits, get_settings
from ...store import ApiKeyRecord
from ..deps import VERIFIED_KEY_STATE
from ..policy import requires
from .conventions import (
    API_VERSION,
    RATE_LIMIT_EXCEEDED,
    error_body,
    is_v1_path,
)

__all__ = ["SCOPES", "AdminKey", "RateLimitMiddleware", "RateLimiter", "ReadKey", "TrainKey",
           "granted", "parse_permissions", "require", "why_invalid"]

_WINDOW_S = 60


# ---- rate limits -----------------------------------------------------------------------------
class RateLimiter:
    """Fixed one-minute windows per identity (thread-safe; the counts live in memory).
    ``RateLimiter(0)`` counts nothing (every request allowed, no headers): for tests that
    send hundreds of requests with keys of their own."""

    def __init__(self, per_minute: int | None = None, limits: RateLimits | None = None):
        self.limits = limits or get_settings().rate_limits
        self.fixed = per_minute  # one limit for every identity (0: off); None: per key
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}  # identity -> (window start, count)

    def limit_for(self, record: ApiKeyRecord | None, *, owner: bool = False) -> int:
        """Requests per minute for a key (or, without one, for a client address)."""
        if self.fixed is not None:
            return self.fixed
        if not self.limits.enabled:
            return 0
        if record is not None and record.rate_limit is not None:
            return record.rate_limit
        if owner:
            return self.limits.per_minute(OWNER_TIER)
        if record is None:
            return self.limits.per_minute(ANONYMOUS_TIER)
        return self.limits.per_minute(record.rate_tier)

    def hit(self, identity: str, limit: int, now: float | None = None
            ) -> tuple[bool, int, int, int]:
        """Count one request: (allowed, limit, remaining, reset as epoch seconds)."""
        now = time.time() if now is None else now
        start = int(now) - int(now) % _WINDOW_S
        reset = start + _WINDOW_S
        if limit <= 0:
            return True, 0, 0, reset
        with self._lock:
            if len(self._windows) > 10_000:  # forget identities idle since an older window
                self._windows = {k: v for k, v in self._windows.items() if v[0] == start}
            window, count = self._windows.get(identity, (start, 0))
            if window != start:
                count = 0
            if count >= limit:
                return False, limit, 0, reset
            count += 1
            self._windows[identity] = (start, count)
        return True, limit, limit - count, reset


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _api_path(scope: Scope) -> str | None:
    """The path under ``/api`` (root path removed), or None for the app's own paths."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path if path == "/api" or path.startswith("/api/") else None


def _too_many(scope: Scope, path: str, limit: int, reset: int, retry: int) -> bytes:
    from ..routes.trainer import is_trainer_path

    message = f"rate limit of {limit} requests per minute exceeded; retry in {retry} s"
    if is_v1_path(scope):
        return error_body(RATE_LIMIT_EXCEEDED, message, {"limit": limit, "reset": reset})
    if is_trainer_path(path):
        return orjson.dumps({"error": message})
    return orjson.dumps({"detail": "rate limit exceeded", "errors": [message]})


def _owner_request(scope: Scope, token: str | None) -> bool:
    """A ``--trainer-open`` loopback request without credentials (the owner's machine)."""
    import ipaddress

    if token is not None or not getattr(scope["app"].state, "trainer_open", False):
        return False
    client = scope.get("client") or ("", 0)
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = _api_path(scope) if scope["type"] == "http" else None
        if path is None:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        keyring: KeyRing = state.keyring
        limiter: RateLimiter = state.v1_limiter
        token = _bearer_token(scope)
        record = keyring.verify(token) if token else None
        scope.setdefault("state", {})[VERIFIED_KEY_STATE] = record
        client = scope.get("client") or ("?", 0)
        identity = f"key:{record.key_id}" if record else f"addr:{client[0]}"
        limit = limiter.limit_for(record, owner=_owner_request(scope, token))
        allowed, limit, remaining, reset = limiter.hit(identity, limit)
        extra = [(b"x-api-version", API_VERSION.encode())] if is_v1_path(scope) else []
        if limit:
            extra += [(b"x-ratelimit-limit", str(limit).encode()),
                      (b"x-ratelimit-remaining", str(remaining).encode()),
                      (b"x-ratelimit-reset", str(reset).encode())]
        if not allowed:
            retry = max(1, math.ceil(reset - time.time()))
            body = _too_many(scope, path, limit, reset, retry)
            await send({"type": "http.response.start", "status": 429, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry).encode()), *extra]})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---- authentication and scopes ---------------------------------------------------------------
def why_invalid(keyring: KeyRing, token: str) -> str:
    """A precise 401 message: unknown, revoked or expired."""
    record = keyring.store.get_api_key(key_hash=hash_key(token))
    if record is None:
        return "invalid API key"
    if record.revoked_at is not None:
        return f"API key {record.key_id} was revoked at {record.revoked_at.isoformat()}"
    if record.expires_at is not None and record.expires_at <= datetime.now(timezone.utc):
        return f"API key {record.key_id} expired at {record.expires_at.isoformat()}"
    return "invalid API key"


def require(scope: str, *, others: str | None = None,
            owner_param: str | None = None) -> Callable[..., ApiKeyRecord]:
    """The dependency for routes that need ``scope`` (read, train or admin); see
    ``workbench.api.policy.requires``."""
    return requires(scope, family="v1", others=others, owner_param=owner_param)


ReadKey = Annotated[ApiKeyRecord, Depends(require("read"))]
TrainKey = Annotated[ApiKeyRecord, Depends(require("train"))]
AdminKey = Annotated[ApiKeyRecord, Depends(require("admin"))]


def key_state(request: Request) -> Any:
    return request.scope.get("state", {}).get(VERIFIED_KEY_STATE)
