"""``BodyLimit``: a pure-ASGI guard that answers 413 for bodies over the configured size.

A declared ``Content-Length`` over the limit is refused before anything is read; a body without
one (chunked) is buffered up to the limit and refused as soon as it passes it. The refusal has
the shape of the path's API family: the envelope under ``/api/v1`` (``VALIDATION_ERROR``,
``details.field: "body"``), ``{"error": ...}`` on the distributed-trainer API, ``{"detail",
"errors"}`` on the MNIST MLP API.
"""

from __future__ import annotations

from typing import Any

import orjson

Scope = dict[str, Any]


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, send, declared)
                return
            await self.app(scope, receive, send)
            return
        # No length declared: read (at most max_bytes) before the app sees anything.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, send, size)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def _body(self, scope: Scope, size: int) -> bytes:
        from .routes.trainer import is_trainer_path
        from .v1.conventions import VALIDATION_ERROR, error_body, is_v1_path

        why = f"body: {size} bytes is over the limit of {self.max_bytes} bytes"
        if is_v1_path(scope):
            return error_body(VALIDATION_ERROR, f"request body too large ({why})",
                              {"field": "body", "limit_bytes": self.max_bytes})
        if is_trainer_path(scope.get("path", "")):
            return orjson.dumps({"error": f"request body too large ({why})"})
        return orjson.dumps({"detail": "request body too large", "errors": [why]})

    async def _refuse(self, scope: Scope, send: Any, size: int) -> None:
        body = self._body(scope, size)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
