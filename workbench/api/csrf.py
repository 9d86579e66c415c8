"""``CrossSiteGuard``: refuse cross-site state-changing requests, on every API family.

A page on another site can make the user's browser send a "simple" request -- a POST with a
``text/plain``, form or typeless body, and no preflight -- to this server. Bearer keys are not
sent that way, but ``--trainer-open`` trusts loopback clients without one, and the app's login
form is a cookie-free POST: so every POST, PUT, PATCH and DELETE passes two checks first
(pure ASGI, before any route or body parsing runs):

- ``Origin``, when present (browsers send it on every cross-origin and every POST request),
  must be this server's own -- its ``host[:port]`` equals the ``Host`` header -- or in the
  allowed set (``allowed_origins``, plus ``app.state.allowed_origins`` /
  ``app.state.v1_allowed_origins``, as ``http://host:port`` or ``host:port``); else 403.
- A body must be ``application/json`` (or ``application/*+json``); else 415. Requests without a
  body and without a ``Content-Type`` pass. The exceptions, routes that legitimately take
  another type: ``POST /api/infer`` takes ``application/octet-stream`` (raw float32 inputs),
  ``POST /api/v1/datasets/upload`` ``multipart/form-data``, ``POST /api/bundles`` and
  ``/api/bundles/rerun`` ``application/zip``, and the app's login form ``POST /login`` is ``application/x-www-form-urlencoded``.

Refusals come in the shape of the route's family: ``{"detail", "errors"}`` for the MNIST MLP
API (``/api``), the envelope for ``/api/v1``, ``{"error"}`` for the distributed-trainer API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from .v1.conventions import error_type, is_v1_path

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
#: (method, path) -> media types besides JSON that the route takes.
OTHER_TYPES: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/api/infer"): frozenset({"application/octet-stream"}),
    ("POST", "/login"): frozenset({"application/x-www-form-urlencoded"}),
    # a dataset file upload (the Origin check above still applies, and a train key)
    ("POST", "/api/v1/datasets/upload"): frozenset({"multipart/form-data"}),
    # run bundles (zip; not a type a page can send without a CORS preflight)
    ("POST", "/api/bundles"): frozenset({"application/zip"}),
    ("POST", "/api/bundles/rerun"): frozenset({"application/zip"}),
}
V1_PREFIX = "/api/v1"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


def _split_host(value: str) -> tuple[str, str | None]:
    """``Host:8080`` -> ``("host", "8080")``; ``[::1]`` -> ``("[::1]", None)``."""
    value = value.strip().lower()
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host, port
    return value, None


def origin_netloc(origin: str) -> str | None:
    """``http://Host`` -> ``host:80``; None for ``null`` or anything not an http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    host, port = _split_host(parts.netloc)
    return f"{host}:{port or _DEFAULT_PORTS[parts.scheme]}"


def normalize_allowed(entries: Iterable[str]) -> frozenset[str]:
    """Allowed origins as ``host:port`` (entries are origins, or ``host[:port]``)."""
    out: set[str | None] = set()
    for entry in entries:
        entry = str(entry).strip()
        if not entry:
            continue
        if "://" in entry:
            out.add(origin_netloc(entry))
        else:
            host, port = _split_host(entry)
            out |= {f"{host}:{port}"} if port else {f"{host}:80", f"{host}:443"}
    return frozenset(e for e in out if e)


def same_origin(origin: str, host: str | None, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether ``Origin`` names this server (its host:port equals ``Host``'s; a Host without a
    port means the default one of the Origin's scheme) or an allowed origin."""
    netloc = origin_netloc(origin)
    if netloc is None:
        return False
    if netloc in allowed:
        return True
    if not host:
        return False
    name, port = _split_host(host)
    origin_host, _, origin_port = netloc.rpartition(":")
    if port is None:
        scheme = urlsplit(origin.strip()).scheme
        port = _DEFAULT_PORTS[scheme]
    return (origin_host, origin_port) == (name, port)


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json(mime: str) -> bool:
    return mime == JSON or (mime.startswith("application/") and mime.endswith("+json"))


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        try:
            return int(length) > 0
        except ValueError:
            return True
    return _header(scope, b"transfer-encoding") is not None


class CrossSiteGuard:
    """The ASGI middleware (see the module's docstring). ``trainer_paths``: the
    distributed-trainer API's path templates (``/api/jobs/{job_id}``), for its error shape."""

    def __init__(self, app: ASGIApp, *, trainer_paths: Iterable[str] = (),
                 allowed_origins: Iterable[str] = (),
                 other_types: Mapping[tuple[str, str], frozenset[str]] | None = None):
        self.app = app
        self.trainer = [compile_path(p)[0] for p in trainer_paths]
        self.allowed = normalize_allowed(allowed_origins)
        self.other_types = dict(OTHER_TYPES if other_types is None else other_types)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], self._path(scope)
        origin = _header(scope, b"origin")
        if origin is not None:
            host = _header(scope, b"host")
            if not same_origin(origin, host, self.allowed | self._state_allowed(scope)):
                await self._refuse(send, path, 403, "cross-origin request refused", "Origin",
                                   f"Origin {origin!r} is neither this server's origin (Host "
                                   f"{host!r}) nor an allowed origin")
                return
        content_type = _header(scope, b"content-type")
        extra = self.other_types.get((method, path), frozenset())
        if content_type is None:
            if _has_body(scope):
                await self._refuse(send, path, 415, "unsupported media type", "Content-Type",
                                   f"a request body needs Content-Type: {self._expected(extra)}")
                return
        else:
            mime = media_type(content_type)
            if not (is_json(mime) or mime in extra):
                await self._refuse(send, path, 415, "unsupported media type", "Content-Type",
                                   f"{method} {path} takes {self._expected(extra)}, not "
                                   f"{mime or content_type!r}")
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _path(scope: Scope) -> str:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        return path

    @staticmethod
    def _expected(extra: frozenset[str]) -> str:
        return " or ".join([JSON, *sorted(extra)])

    @staticmethod
    def _state_allowed(scope: Scope) -> frozenset[str]:
        app = scope.get("app")
        state = getattr(app, "state", None)
        entries: list[str] = []
        for name in ("allowed_origins", "v1_allowed_origins"):
            entries += list(getattr(state, name, None) or ())
        return normalize_allowed(entries) if entries else frozenset()

    def family(self, path: str) -> str:
        if is_v1_path({"path": path}):  # /api/v1 and the conventions' /api/plugin-core
            return "v1"
        if any(regex.match(path) for regex in self.trainer):
            return "trainer"
        return "api"

    async def _refuse(self, send: Send, path: str, status: int, detail: str, field: str,
                      why: str) -> None:
        family = self.family(path)
        body: Any
        if family == "v1":
            code = "FORBIDDEN" if status == 403 else UNSUPPORTED_MEDIA_TYPE
            body = {"success": False, "error": {"code": code, "message": why,
                                                "type": error_type(code),
                                                "details": {"field": field}}}
        elif family == "trainer":
            body = {"error": why}
        else:
            body = {"detail": detail, "errors": [f"{field}: {why}"]}
        raw = orjson.dumps(body)
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(raw)).encode())]
        if status == 415:
            headers.append((b"accept", self._accept(path).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    def _accept(self, path: str) -> str:
        extra = {t for (m, p), types in self.other_types.items() if p == path for t in types}
        return ", ".join([JSON, *sorted(extra)])
