"""Permission scopes and per-key rate limits of ``/api/v1``, on top of the key ring of
``workbench.auth``.

Scopes: ``read`` < ``train`` < ``admin``, defined with every API family's policy in
``workbench.api.policy``. ``require("train")`` is that policy's dependency in this family's
shape: 401 AUTH_INVALID for a missing, unknown, revoked or expired key (the message says
which), 403 FORBIDDEN for a key without the scope.

``V1Middleware`` (pure ASGI, only ``/api/v1`` HTTP requests) counts requests per key (per client
address for requests without a valid key) in fixed one-minute windows, adds
``X-RateLimit-Limit/Remaining/Reset`` and ``X-API-Version`` to every response and answers 429
RATE_LIMIT_EXCEEDED (with ``Retry-After``) past the limit, before any route runs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...auth import SCOPES, KeyRing, granted, hash_key, parse_permissions
from ...store import ApiKeyRecord
from ..policy import requires
from .conventions import (
    API_VERSION,
    RATE_LIMIT_EXCEEDED,
    error_body,
    is_v1_path,
)

__all__ = ["SCOPES", "AdminKey", "RateLimiter", "ReadKey", "TrainKey", "V1Middleware",
           "granted", "parse_permissions", "require", "why_invalid"]

_WINDOW_S = 60
_STATE_KEY = "v1_key"


# ---- rate limits -----------------------------------------------------------------------------
class RateLimiter:
    """Fixed one-minute windows per identity (thread-safe; the counts live in memory)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute  # 0: unlimited
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}  # identity -> (window start, count)

    def hit(self, identity: str, now: float | None = None) -> tuple[bool, int, int, int]:
        """Count one request: (allowed, limit, remaining, reset as epoch seconds)."""
        now = time.time() if now is None else now
        start = int(now) - int(now) % _WINDOW_S
        reset = start + _WINDOW_S
        if self.per_minute <= 0:
            return True, 0, 0, reset
        with self._lock:
            if len(self._windows) > 10_000:  # forget identities idle since an older window
                self._windows = {k: v for k, v in self._windows.items() if v[0] == start}
            window, count = self._windows.get(identity, (start, 0))
            if window != start:
                count = 0
            if count >= self.per_minute:
                return False, self.per_minute, 0, reset
            count += 1
            self._windows[identity] = (start, count)
        return True, self.per_minute, self.per_minute - count, reset


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class V1Middleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_v1_path(scope):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        keyring: KeyRing = state.keyring
        limiter: RateLimiter = state.v1_limiter
        token = _bearer_token(scope)
        record = keyring.verify(token) if token else None
        scope.setdefault("state", {})[_STATE_KEY] = record
        client = scope.get("client") or ("?", 0)
        identity = f"key:{record.key_id}" if record else f"addr:{client[0]}"
        allowed, limit, remaining, reset = limiter.hit(identity)
        extra = [(b"x-api-version", API_VERSION.encode())]
        if limit:
            extra += [(b"x-ratelimit-limit", str(limit).encode()),
                      (b"x-ratelimit-remaining", str(remaining).encode()),
                      (b"x-ratelimit-reset", str(reset).encode())]
        if not allowed:
            retry = max(1, math.ceil(reset - time.time()))
            body = error_body(RATE_LIMIT_EXCEEDED,
                              f"rate limit of {limit} requests per minute exceeded; retry in "
                              f"{retry} s", {"limit": limit, "reset": reset})
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
    return request.scope.get("state", {}).get(_STATE_KEY)
