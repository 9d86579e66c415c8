"""Login for the app, the way Jupyter does it: the REST API's key, presented once in the URL.

    http://127.0.0.1:8765/?token=<key>   -> cookie set, redirect to the clean URL
    Authorization: Bearer <key>          -> what Jupyter's proxy adds to every request
    the cookie afterwards                -> the page, Panel's websocket

The app's page (``/``) and Panel's websocket (``/ws``) need a valid API key, checked by the same
``KeyRing.verify`` the REST API's ``require_key`` uses. Without one, ``/`` answers a small login
form with 401 and the websocket handshake is refused (403). The cookie is HttpOnly and
SameSite=Strict and holds the key itself, so revoking the key logs the browser out; the REST API
never reads it (a cookie there would invite cross-site request forgery). Panel's JS/CSS under
``/static`` stay public: they are the installed packages' files.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from ..auth import APP_SCOPE, allows

# The same header parser as the REST API's (FastAPI's), not a copy of the API layer.
bearer = HTTPBearer(auto_error=False)

TOKEN_PARAM = "token"
COOKIE_PREFIX = "workbench_key"
COOKIE_MAX_AGE_S = 30 * 24 * 3600


def cookie_name(host: str | None) -> str:
    """Cookies ignore ports: two servers on one host would overwrite each other's login, so the
    name carries the port of the ``Host`` header (as Jupyter's ``username-<host>-<port>``)."""
    port = (host or "").rpartition(":")[2] if ":" in (host or "") else ""
    return f"{COOKIE_PREFIX}_{port}" if port.isdigit() else COOKIE_PREFIX


async def presented_key(conn: HTTPConnection) -> str | None:
    """The key from ``Authorization: Bearer`` (the REST API's parser) or else the login cookie."""
    credentials = await bearer(conn)  # type: ignore[arg-type,unused-ignore]  # reads .headers
    if credentials is not None:
        return credentials.credentials
    return conn.cookies.get(cookie_name(conn.headers.get("host")))


def key_record(conn: HTTPConnection, key: str | None) -> Any:
    """The key's record if it is known, unrevoked and unexpired (the REST API's check)."""
    return conn.app.state.keyring.verify(key)


def key_valid(conn: HTTPConnection, key: str | None) -> bool:
    """A usable key whose scopes allow the app (``auth.APP_SCOPE``): the policy's check."""
    return allows(key_record(conn, key), APP_SCOPE)


def refusal(conn: HTTPConnection, key: str | None) -> str:
    """Why the login form refused ``key`` (shown on the form)."""
    if not key:
        return "Enter an API key."
    if key_record(conn, key) is None:
        return "That key is not valid (unknown, revoked or expired)."
    return (f"That key lacks the '{APP_SCOPE}' scope the app needs (it launches and cancels "
            f"runs). Make one with `workbench keys create --scopes {APP_SCOPE}`.")


async def authenticated(conn: HTTPConnection) -> bool:
    return key_valid(conn, await presented_key(conn))


def login_response(request: Request, key: str, target: str) -> Response:
    """303 to ``target`` (relative, so it works under Jupyter's ``/workbench/`` prefix) with
    the login cookie."""
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        cookie_name(request.headers.get("host")), key, max_age=COOKIE_MAX_AGE_S, httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
        # No Path: the browser scopes it to the page's folder ("/" or Jupyter's "/workbench/").
        path=None,
    )
    return response


def clean_target(request: Request) -> str:
    """``./`` plus the query without ``token`` (relative to the page the browser is on)."""
    rest = [(k, v) for k, v in request.query_params.multi_items() if k != TOKEN_PARAM]
    return "./" + (f"?{urlencode(rest)}" if rest else "")


async def form_key(request: Request) -> str | None:
    """The ``token`` field of the login form (urlencoded; parsed here, no multipart needed)."""
    body = (await request.body())[:8192].decode("utf-8", "replace")
    return dict(parse_qsl(body)).get(TOKEN_PARAM) or None


def login_page(message: str = "", status_code: int = 401) -> HTMLResponse:
    """The login form: posts the key to ``login`` (relative: ``/login`` or ``/workbench/login``)."""
    error = f"<p class='err'>{html.escape(message)}</p>" if message else ""
    page = LOGIN_HTML.replace("{error}", error)
    return HTMLResponse(page, status_code=status_code,
                        headers={"WWW-Authenticate": "Bearer", "Cache-Control": "no-store"})


LOGIN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nn-workbench · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="favicon.ico">
<style>
body { margin: 0; min-height: 100vh; display: grid; place-items: center;
  font-family: Inter, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: linear-gradient(135deg, #0f172a, #1e3a8a); }
form { background: #fff; border-radius: 14px; padding: 28px 32px; width: 360px;
  box-shadow: 0 20px 50px rgba(0,0,0,.35); }
h1 { margin: 0 0 4px 0; font-size: 22px; color: #0f172a; }
p { color: #475569; font-size: 14px; line-height: 1.45; }
code { background: #eef2ff; border-radius: 4px; padding: 1px 5px; }
input { width: 100%; box-sizing: border-box; padding: 10px 12px; font-size: 15px;
  border: 1px solid #cbd5e1; border-radius: 8px; margin: 6px 0 14px 0; }
button { width: 100%; padding: 10px; font-size: 15px; font-weight: 600; color: #fff;
  background: #2563eb; border: 0; border-radius: 8px; cursor: pointer; }
.err { color: #b42318; font-weight: 600; }
</style></head>
<body><form method="post" action="login" class="wb-login">
<h1>&#9670; nn-workbench</h1>
<p>This app needs an API key: the one <code>workbench serve</code> printed when it started
(or <code>WORKBENCH_TOKEN</code>), or open the link it printed.</p>
{error}
<label for="token">API key</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form></body></html>
"""

