"""Serve the Panel app at ``/`` on the REST API's FastAPI app (one port, one process).

``mount(app, service)`` is called by ``workbench.api.app.create_app``. It uses
``panel.io.fastapi.add_applications`` (bokeh-fastapi): Panel's document page at ``/``, its
websocket at ``/ws`` and its JS/CSS under ``/static`` -- served from the installed packages, so
the app works offline. The page and the websocket need an API key (``login``: Jupyter-style
``/?token=<key>``, then a cookie; or ``Authorization: Bearer``). bokeh-fastapi does not check
the websocket's ``Origin``, so a small ASGI middleware refuses cross-site websocket connections
(another site's page could otherwise drive a session with the user's access to this server).

First render: the page comes without plotly.js / Tabulator (``lazy``), a spare session's views
are built ahead, the device peak is measured in the background, and FastAPI's lazily prepared
routes are walked once at startup, so a visitor pays only for its own Bokeh document.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

# Module level: FastAPI resolves the handlers' (string) annotations from these globals.
from fastapi import Request, WebSocket
from fastapi.responses import HTMLResponse, Response

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]
PANEL_WS_PATHS = frozenset({"/ws"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def origin_allowed(origin: str | None, host: str | None, extra: frozenset[str] = frozenset()
                   ) -> bool:
    """Same-origin (Origin's host:port equals the Host header) or explicitly allowed.
    A missing Origin (non-browser clients) is allowed: browsers always send one."""
    if origin is None:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and (netloc == (host or "").lower() or netloc in extra)


class OriginCheckMiddleware:
    """Refuse Panel websocket handshakes whose ``Origin`` is another site (HTTP 403)."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] = frozenset()):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope.get("path") in PANEL_WS_PATHS:
            origin, host = _header(scope, b"origin"), _header(scope, b"host")
            if not origin_allowed(origin, host, self.allowed):
                log.warning("refused app websocket from origin %r (host %r)", origin, host)
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)


def mount(app: Any, service: Any, *, allowed_origins: frozenset[str] = frozenset()) -> None:
    """Add the Panel app at ``/`` (plus ``/ws``, ``/login`` and ``/static``) to the FastAPI
    ``app``; ``/`` and ``/ws`` need an API key (``login``), checked by ``app.state.keyring``."""
    import panel as pn
    from bokeh.settings import settings as bokeh_settings
    from panel.io.fastapi import add_applications

    from .app import TITLE, create_app
    from .login import session_authorizer
    from .state import prewarm_peaks

    # The device peak (for predicted epoch times and "share of peak") is measured in the
    # background while the rest starts; a page never waits for it (AppState.defer_peak).
    probe = prewarm_peaks()
    # Components created in later callbacks (lazy tabs, new layer rows) resolve their
    # stylesheets against the CDN unless Bokeh's resource mode is "server"; the app must work
    # offline, from the installed packages.
    bokeh_settings.resources.set_value("server")
    pn.extension("plotly", "tabulator", notifications=False)

    # A spare session's views, built ahead: now (so imports happen before the server accepts
    # connections) for the first visitor, then again a moment after each page is served, so
    # a request only pays for turning them into Bokeh models. (Only views, never rendered
    # here: Bokeh models made outside a session document get CDN stylesheet URLs.)
    spares = [create_app(service, lazy_js=True)]

    lock = threading.Lock()

    def refill() -> None:
        with lock:
            if spares or service.store.closed:
                return
            try:
                spares.append(create_app(service, lazy_js=True))
            except RuntimeError:
                # a timer can outlive the server: its store closed while the views were built
                if not service.store.closed:
                    raise

    def session() -> Any:
        # Registering this document's extensions (none) keeps plotly.js and Tabulator out of
        # the page: LibraryLoader fetches them when a tab needs them.
        pn.extension(notifications=False)
        view = spares.pop() if spares else create_app(service, lazy_js=True)
        # The app's actions use the REST policy's scopes: admin ones ask this session's key.
        view.state.authorize = session_authorizer(app.state.keyring, pn.state.headers,
                                                  pn.state.cookies)
        # On a thread, outside any session's document: the event loop keeps serving this
        # visitor's JS and websocket meanwhile (only views are made, no Bokeh models).
        timer = threading.Timer(SPARE_DELAY_S, refill)
        timer.daemon = True
        timer.start()
        return view

    add_applications({"/": session}, app=app, title=TITLE)
    _protect(app)
    _add_favicon(app)
    _warm_routes_on_startup(app)
    app.add_middleware(OriginCheckMiddleware, allowed=frozenset(allowed_origins))
    # Finish the probe before the port opens when it is quick (it is, on CPU), so the threads
    # settings the caller applies after mount() cannot change what it measures.
    probe.join(PROBE_WAIT_S)


PROBE_WAIT_S = 10.0
SPARE_DELAY_S = 2.0  # after a page is served: after its browser has rendered it, typically


def _protect(app: Any) -> None:
    """Swap bokeh-fastapi's ``/`` and ``/ws`` routes for ones that log in first (``login``),
    leave them out of the OpenAPI document, and add ``POST /login`` for the login form and
    ``POST /logout`` (ends the browser's session).

    The page handler also never takes a client-chosen ``bokeh_session_id`` (bokeh-fastapi's
    would create or join a session of that id; an odd one was a 500): every page load is a new
    session."""
    from fastapi.routing import APIRoute, APIWebSocketRoute

    from .login import (
        TOKEN_PARAM,
        authenticated,
        clean_target,
        form_key,
        key_record,
        key_valid,
        login_page,
        login_response,
        logout_response,
        presented_key,
        refusal,
        renew_cookie,
    )

    routes = app.router.routes
    page_i = next(i for i, r in enumerate(routes)
                  if isinstance(r, APIRoute) and r.path == "/" and "GET" in (r.methods or ()))
    ws_i = next(i for i, r in enumerate(routes)
                if isinstance(r, APIWebSocketRoute) and r.path in PANEL_WS_PATHS)
    doc_handler = routes[page_i].endpoint.__self__  # bokeh_fastapi.handler.DocHandler
    panel_ws = routes[ws_i].endpoint

    async def page(request: Request) -> Response:
        key = request.query_params.get(TOKEN_PARAM)
        if key is not None:
            if key_valid(request, key):
                return login_response(request, key, clean_target(request))
            return login_page(refusal(request, key), status_code=_refusal_status(request, key))
        if not await authenticated(request):
            presented = await presented_key(request)
            return login_page(refusal(request, presented) if presented else "",
                              status_code=_refusal_status(request, presented))
        try:
            return renew_cookie(request, await doc_handler.get(request, None))
        except Exception:  # a broken session must show a message, not a bare 500 traceback
            log.exception("could not create an app session")
            return HTMLResponse("<h1>nn-workbench</h1><p>The app could not start a session; "
                                "see the server log.</p>", status_code=500)

    async def websocket(ws: WebSocket) -> None:
        if not await authenticated(ws):
            log.warning("refused app websocket without a valid API key")
            await ws.close(code=1008)  # before accept: the handshake is answered 403
            return
        await panel_ws(ws)

    async def login(request: Request) -> Response:
        key = await form_key(request)
        if key is not None and key_valid(request, key):
            return login_response(request, key, "./")
        return login_page(refusal(request, key))

    async def logout(request: Request) -> Response:
        return logout_response(request)

    def _refusal_status(request: Request, key: str | None) -> int:
        # A usable key without the app's scope is 403 (who you are is known); else 401.
        return 403 if key and key_record(request, key) is not None else 401

    ws_path = routes[ws_i].path
    for i in sorted((page_i, ws_i), reverse=True):
        del routes[i]
    # Added anew (not swapped in place) so FastAPI's route cache sees the change.
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.add_api_websocket_route(ws_path, websocket)
    app.add_api_route("/login", login, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", logout, methods=["POST"], include_in_schema=False)


WARM_PATHS = ("/", "/api/", "/api/v1/", "/static/")


def _warm_routes_on_startup(app: Any) -> None:
    """FastAPI prepares each route (pydantic adapters for its parameters) on the first request
    that walks past it: half a second on a small machine, paid by the first visitor. Walk every
    router once with a path nothing matches, at startup (before uvicorn opens the port)."""
    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> Any:
        async with original(asgi_app) as value:
            for prefix in WARM_PATHS:
                await _no_match(app.router, prefix + "__warm_up__")
            yield value

    app.router.lifespan_context = lifespan


async def _no_match(router: Any, path: str) -> None:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": [], "scheme": "http",
             "server": ("127.0.0.1", 0), "client": ("127.0.0.1", 0), "app": None,
             "http_version": "1.1"}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        pass

    try:
        await router(scope, receive, send)
    except Exception:  # a warm-up only: never fail the start for it
        log.debug("route warm-up of %s failed", path, exc_info=True)


def _add_favicon(app: Any) -> None:
    """Serve a small icon: browsers ask for /favicon.ico, and a 404 is a console error."""
    from fastapi.responses import Response

    if any(getattr(r, "path", None) == "/favicon.ico" for r in app.router.routes):
        return
    svg = ("<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>"
           "<rect width='16' height='16' rx='3' fill='#1e3a8a'/>"
           "<path d='M8 3l5 5-5 5-5-5z' fill='#fff'/></svg>")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(svg, media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})


def standalone_app(service: Any | None = None) -> Any:
    """A FastAPI app serving only the Panel app (development without the REST API)."""
    from fastapi import FastAPI

    if service is None:
        from ..service import Workbench
        from ..store import Store

        service = Workbench(Store())
    from ..auth import KeyRing, bootstrap_admin_key
    from ..config import get_settings

    app = FastAPI(title=TITLE_STANDALONE)
    app.state.generated_key = bootstrap_admin_key(service.store, get_settings().token)
    app.state.keyring = KeyRing(service.store)  # the app's login checks keys here
    mount(app, service)
    return app


TITLE_STANDALONE = "nn-workbench app"
