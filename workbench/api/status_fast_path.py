"""``GET /api/runs/{run_id}`` of a run in memory, answered before the router (ASGI).

Why: a polled status is the API's hottest request, and on it the router's route matching and
dependency solving cost about three quarters of the CPU (``benchmarks/status_under_load.py``).
This layer answers only the success of an authorised read of a run the service projects in
memory, with the route's own body; anything else (no key, a key without the route's scope, an
unknown run, a run that needs a store read, another method) goes on to the route, which gives
the documented answer. The scope checked is read off the route's own policy dependency, so the
two cannot drift apart; it sits inside the rate limiter, which verified the key and adds the
X-RateLimit-* headers.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import allows
from .deps import VERIFIED_KEY_STATE
from .policy import route_requirement
from .routes.runs import run_body

_RUN_PATH = re.compile(r"/api/runs/([A-Za-z0-9_\-]{1,128})")
_HEADERS = [(b"content-type", b"application/json")]


class RunStatusFastPath:
    def __init__(self, app: ASGIApp, *, route_app: Any):
        self.app = app
        # Built with the middleware stack, on the first request: every route is included then.
        req = route_requirement(route_app, "/api/runs/{run_id}", "GET")
        if req.others is not None or req.family != "api":
            raise RuntimeError(f"GET /api/runs/{{run_id}} has a policy this layer cannot check: "
                               f"{req}")
        self._needed = req.scope
        self.answered = 0  # requests answered here (tests read it)
        route_app.state.status_fast_path = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._answer(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        self.answered += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_HEADERS, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _answer(self, scope: Scope) -> bytes | None:
        if scope["method"] != "GET" or scope.get("query_string"):
            return None
        match = _RUN_PATH.fullmatch(scope["path"]) if not scope.get("root_path") else None
        if match is None:
            return None
        record = scope.get("state", {}).get(VERIFIED_KEY_STATE)
        if record is None or not allows(record, self._needed):
            return None
        run = scope["app"].state.service.cached_run(match.group(1))
        return None if run is None else run_body(run)
