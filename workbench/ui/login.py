"""Login for the app, the way Jupyter does it: the REST API's key, presented once in the URL.

    http://127.0.0.1:8765/?token=<key>   -> session cookie set, redirect to the clean URL
    Authorization: Bearer <key>          -> what Jupyter's proxy adds to every request
    the session cookie afterwards        -> the page, Panel's websocket
    POST logout                          -> the session ends, the cookie is cleared

The app's page (``/``) and Panel's websocket (``/ws``) need a valid API key, checked by the same
``KeyRing.verify`` the REST API's ``require_key`` uses. Without one, ``/`` answers a small login
form with 401 and the websocket handshake is refused (403).

The cookie never holds the key: it holds a random server-side session id (``KeyRing.sessions``,
in memory) that maps to the key's id. It is HttpOnly, SameSite=Strict, scoped to the app's path
(``Path`` is the proxy's prefix when the request names one, else left to the browser, which
scopes it to the folder the app is served from: ``/``, or Jupyter's ``/workbench``), Secure over
https, and lasts ``SESSION_COOKIE_S`` (12 h), renewed on each page load; the server ends an
idle session after 12 h as well. Logging out, or revoking or expiring the key, ends the session
at once. The REST API never reads the cookie (a cookie there would invite cross-site request
forgery). Panel's JS/CSS under ``/static`` stay public: they are the installed packages' files.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from ..auth import APP_SCOPE, SESSION_IDLE_S, SESSION_PREFIX, allows

# The same header parser as the REST API's (FastAPI's), not a copy of the API layer.
bearer = HTTPBearer(auto_error=False)

TOKEN_PARAM = "token"
COOKIE_PREFIX = "workbench_key"  # the name older versions used: a login overwrites theirs
SESSION_COOKIE_S = int(SESSION_IDLE_S)


def cookie_name(host: str | None) -> str:
    """Cookies ignore ports: two servers on one host would overwrite each other's login, so the
    name carries the port of the ``Host`` header (as Jupyter's ``username-<host>-<port>``)."""
    port = (host or "").rpartition(":")[2] if ":" in (host or "") else ""
    return f"{COOKIE_PREFIX}_{port}" if port.isdigit() else COOKIE_PREFIX


def session_id(conn: HTTPConnection) -> str | None:
    """The session id in the login cookie, if it looks like one."""
    value = conn.cookies.get(cookie_name(conn.headers.get("host")))
    return value if value and value.startswith(SESSION_PREFIX) else None


async def presented_key(conn: HTTPConnection) -> str | None:
    """The key from ``Authorization: Bearer`` (the REST API's parser), else the login cookie's
    session id (which :func:`key_record` resolves; it is never a key)."""
    credentials = await bearer(conn)  # type: ignore[arg-type,unused-ignore]  # reads .headers
    if credentials is not None:
        return credentials.credentials
    return session_id(conn)


def key_record(conn: HTTPConnection, key: str | None) -> Any:
    """The record of a key (the REST API's check: known, unrevoked, unexpired), or of the key
    behind a live login session (the session is renewed by this use)."""
    keyring = conn.app.state.keyring
    if key and key.startswith(SESSION_PREFIX):
        return keyring.session(key)
    return keyring.verify(key)


def session_authorizer(keyring: Any, headers: Any, cookies: Any) -> Any:
    """``scope -> bool`` for an app session, from the request that opened it (its bearer key or
    login cookie): the key is looked up again at each call, so revoking it, or a key without
    ``admin``, refuses the app's admin actions as the REST API refuses them."""
    auth = str(headers.get("Authorization") or headers.get("authorization") or "")
    scheme, _, token = auth.partition(" ")
    key_id: str | None = None
    if scheme.lower() == "bearer" and token.strip():
        record = keyring.verify(token.strip())
        key_id = record.key_id if record is not None else None
    else:
        host = headers.get("Host") or headers.get("host")
        record = keyring.session(cookies.get(cookie_name(host)) or None)
        key_id = record.key_id if record is not None else None

    def authorize(scope: str) -> bool:
        return key_id is not None and allows(keyring.record(key_id), scope)

    authorize.key_id = key_id  # type: ignore[attr-defined]  # who registers a node, for example
    return authorize


def key_valid(conn: HTTPConnection, key: str | None) -> bool:
    """A usable key whose scopes allow the app (``auth.APP_SCOPE``): the policy's check."""
    return allows(key_record(conn, key), APP_SCOPE)


def refusal(conn: HTTPConnection, key: str | None) -> str:
    """Why the login form refused ``key`` (shown on the form). None: nothing was entered; an
    empty ``?token=`` in a link is a key that is not valid."""
    if key is None:
        return "Enter an API key."
    if key.startswith(SESSION_PREFIX) and key_record(conn, key) is None:
        return "Your session ended (logged out, expired, or its key was revoked): log in again."
    if key_record(conn, key) is None:
        return "That key is not valid (unknown, revoked or expired)."
    return (f"That key lacks the '{APP_SCOPE}' scope the app needs (it launches and cancels "
            f"runs). Make one with `workbench keys create --scopes {APP_SCOPE}`.")


async def authenticated(conn: HTTPConnection) -> bool:
    return key_valid(conn, await presented_key(conn))


def cookie_path(request: HTTPConnection) -> str | None:
    """The app's path for the cookie: the prefix a proxy or ASGI server names (``root_path``,
    ``X-Forwarded-Prefix``), else None -- no ``Path`` attribute, so the browser scopes the
    cookie to the folder of the page that set it (the app's: ``/``, or ``/workbench`` under
    Jupyter's proxy, which strips its prefix before we see the request)."""
    prefix = request.scope.get("root_path") or request.headers.get("x-forwarded-prefix") or ""
    prefix = prefix.split(",")[0].strip()
    if not prefix.startswith("/") or any(c in prefix for c in ";\r\n"):
        return None
    return prefix.rstrip("/") or "/"


def set_session_cookie(request: HTTPConnection, response: Response, session: str) -> None:
    response.set_cookie(
        cookie_name(request.headers.get("host")), session, max_age=SESSION_COOKIE_S,
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
        path=cookie_path(request),  # None: no Path attribute (the browser scopes it)
    )


def clear_session_cookie(request: HTTPConnection, response: Response) -> None:
    response.set_cookie(cookie_name(request.headers.get("host")), "", max_age=0, expires=0,
                        httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path=cookie_path(request))  # the same Path as when it was set


def login_response(request: Request, key: str, target: str) -> Response:
    """303 to ``target`` (relative, so it works under Jupyter's ``/workbench/`` prefix) with a
    new login session's cookie (``key`` must be valid: the caller checked ``key_valid``)."""
    record = key_record(request, key)
    if record is None:
        return login_page(refusal(request, key))
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(request, response, request.app.state.keyring.open_session(record))
    return response


def renew_cookie(request: HTTPConnection, response: Response) -> Response:
    """Re-issue the session cookie of a page load (so it lasts 12 h from the last use)."""
    session = session_id(request)
    if session is not None and getattr(response, "status_code", 200) < 400:
        set_session_cookie(request, response, session)
    return response


def logout_response(request: Request) -> Response:
    """End this browser's session, clear its cookie, show the login form."""
    request.app.state.keyring.end_session(session_id(request))
    response = login_page("You are logged out.", status_code=200)
    clear_session_cookie(request, response)
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

