"""The authorization policy of every API family, in one place.

Scopes: ``read`` < ``train`` < ``admin`` (a key's ``permissions`` is one of them or a
comma-separated list; each implies the ones below it). Every route declares what it needs:

    @router.post("/models/{model_id}/train", dependencies=[Depends(requires("train"))])
    def train(..., key: TrainKey): ...                          # or as a parameter
    router = APIRouter(dependencies=[Depends(requires("read", family="trainer"))])

``requires`` answers 401 for a missing, unknown, revoked or expired key and 403 for a key
without the scope, in the error shape of the route's API family (``FAMILIES``: the MNIST MLP
API's ``{"detail", "errors"}``, ``/api/v1``'s envelope, the distributed-trainer API's
``{"error"}``). The dependency carries its :class:`Requirement` (``dependency.__policy__``), so
a route's dependant tree says what the route needs: :func:`declared_requirement`, and
:func:`iter_app_routes` walks everything an app mounts (``tests/security/test_scopes.py``
fails for a route without a declaration).

The policy (what each family's routes declare; ``docs`` of the route table):

==========================================  ======================================================
reads (GET), inference (``/api/infer``,     ``read``: a forward pass reads a trained model and
``/api/infer_adhoc``, v1 ``predict``), the  stores nothing; a node check only probes and
websocket ``/api/v1/ws``, ``POST            refreshes its status
/api/v1/nodes/{id}/check``
creating models, runs, jobs, deployments;   ``train`` (exporting a run bundle, ``GET
training, fine-tuning, trainer-API jobs,    /api/runs/{id}/bundle``, is a read)
``network/initialize``, ``network/train``,
importing and rerunning run bundles
(``POST /api/bundles``, ``/bundles/rerun``)
cancelling, pausing, resuming a run        ``train`` for a run the key started (its
(``POST /api/runs/{id}/cancel``, ``/pause``, ``run.owner`` event), ``admin`` for any other run,
``/resume``, ``DELETE /api/v1/tasks/{id}``) including runs with no recorded owner (CLI, app,
                                            trainer API in open mode, older runs)
creating a sweep (``POST /api/sweeps``),    ``train``; cancelling: ``train`` for a sweep the
cancelling one (``.../{id}/cancel``)        key created (its trials' runs are that key's too),
                                            ``admin`` for any other
API keys (``/api/v1/auth/keys``), compute   ``admin``
nodes (``POST``/``DELETE /api/v1/nodes``),
trainer devices (``/api/devices/...``)
the Panel app (``/``, ``/ws``)              ``train``: a session launches and cancels runs
                                            through the service directly (see ``EXTERNAL``)
health, version, OpenAPI document and       public (``PUBLIC``)
explorer, the app's login form, favicon
and static assets
==========================================  ======================================================

``--trainer-open`` (``app.state.trainer_open``) is a decision of this policy too
(:data:`TRAINER_OPEN_GRANTS`): a request of the distributed-trainer family from a loopback
address (127.0.0.0/8, ::1) that carries no ``Authorization`` header at all is let in with every
trainer scope, so the API document's curl examples work verbatim on the machine itself. A
request that does carry a key is judged by that key, from loopback too; nothing outside the
trainer family is opened.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from ..auth import APP_SCOPE, PUBLIC, SCOPES, allows
from ..store import ApiKeyRecord
from .deps import bearer, get_keyring, verified_key

_RANK = {PUBLIC: 0, "read": 1, "train": 2, "admin": 3}
RUN_OWNER = "run.owner"  # the event naming who started a run: data {"key_id", "via"}

#: What a token-less loopback request to the distributed-trainer API may do under
#: ``workbench serve --trainer-open``: the whole trainer API (the document's flow registers
#: devices, an ``admin`` action). Only that family honours it.
TRAINER_OPEN_GRANTS = frozenset(SCOPES)


def stronger(a: str, b: str) -> str:
    return a if _RANK[a] >= _RANK[b] else b


# ---- requirements ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    """What a route needs. ``others``: the scope needed when the run named by the path
    parameter ``owner_param`` was started by another key (or by no recorded key)."""

    scope: str
    family: str = "api"
    others: str | None = None
    owner_param: str | None = None

    def describe(self) -> str:
        text = self.scope
        if self.others:
            text += f" (own run; {self.others} for another key's)"
        return text


class TrainerRefused(Exception):
    """A refusal in the distributed-trainer API's shape, ``{"error": ...}`` (its handler is
    installed by ``workbench.api.routes.trainer.install``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.headers = headers or {"WWW-Authenticate": "Bearer"}


def _challenge(scope: str | None = None) -> dict[str, str]:
    if scope is None:
        return {"WWW-Authenticate": "Bearer"}
    return {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'}


def _why_missing(conn: HTTPConnection, token: str | None) -> str:
    if not token:
        return "missing bearer token (Authorization: Bearer <key>)"
    return "invalid, revoked or expired API key"


def _forbidden_message(record: ApiKeyRecord, scope: str, why: str | None) -> str:
    text = f"this API key ({record.permissions}) lacks the {scope!r} permission"
    return f"{text}: {why}" if why else text


# A family: how its refusals look. unauthenticated(conn, token) and
# forbidden(record, scope, why) return the exception to raise.
@dataclass(frozen=True)
class Family:
    name: str
    unauthenticated: Callable[[HTTPConnection, str | None], Exception]
    forbidden: Callable[[ApiKeyRecord, str, str | None], Exception]


def _api_unauthenticated(conn: HTTPConnection, token: str | None) -> Exception:
    return HTTPException(401, _why_missing(conn, token), headers=_challenge())


def _api_forbidden(record: ApiKeyRecord, scope: str, why: str | None) -> Exception:
    return HTTPException(403, _forbidden_message(record, scope, why), headers=_challenge(scope))


def _v1_unauthenticated(conn: HTTPConnection, token: str | None) -> Exception:
    from .v1.conventions import AUTH_INVALID, ApiError
    from .v1.security import why_invalid

    if token:
        message = why_invalid(get_keyring(conn), token)
    else:
        message = "missing API key (Authorization: Bearer <key>)"
    return ApiError(401, AUTH_INVALID, message, field="Authorization", headers=_challenge())


def _v1_forbidden(record: ApiKeyRecord, scope: str, why: str | None) -> Exception:
    from .v1.conventions import FORBIDDEN, ApiError

    return ApiError(403, FORBIDDEN, _forbidden_message(record, scope, why),
                    details={"required": scope}, headers=_challenge(scope))


def _trainer_unauthenticated(conn: HTTPConnection, token: str | None) -> Exception:
    return TrainerRefused(401, _why_missing(conn, token))


def _trainer_forbidden(record: ApiKeyRecord, scope: str, why: str | None) -> Exception:
    return TrainerRefused(403, _forbidden_message(record, scope, why), _challenge(scope))


FAMILIES = {
    "api": Family("api", _api_unauthenticated, _api_forbidden),  # the MNIST MLP API, /api
    "v1": Family("v1", _v1_unauthenticated, _v1_forbidden),  # the native API, /api/v1
    "trainer": Family("trainer", _trainer_unauthenticated, _trainer_forbidden),
}

def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trainer_open_applies(conn: HTTPConnection) -> bool:
    """``--trainer-open``: a loopback client that presents no credentials at all."""
    return (bool(getattr(conn.app.state, "trainer_open", False))
            and "authorization" not in conn.headers
            and _is_loopback(conn.client.host if conn.client else None))


def run_owner(service: Any, run_id: str) -> str | None:
    """The key that started ``run_id`` (its first ``run.owner`` event), or None."""
    after = 0
    while True:
        events = service.store.list_events(run_id, after_id=after, limit=500)
        for event in events:
            if event["type"] == RUN_OWNER:
                key_id = (event.get("data") or {}).get("key_id")
                return key_id if isinstance(key_id, str) else None
        if len(events) < 500:
            return None
        after = events[-1]["id"]


def record_run_owner(service: Any, run_id: str, record: ApiKeyRecord | None, *, via: str) -> None:
    """Log who started ``run_id`` (a ``run.owner`` event; nothing for an anonymous caller)."""
    if record is None:
        return
    from .. import events as ev

    service.record_event(ev.make_event(RUN_OWNER, run_id, key_id=record.key_id, via=via))


_PUBLIC_RUN_PREFIXES = ("job_", "finetune_")  # Cortex ids naming the run r_<same hex>


def run_id_of(value: str) -> str:
    """``job_<hex>``, ``finetune_<hex>`` or ``r_<hex>`` -> ``r_<hex>``."""
    for prefix in _PUBLIC_RUN_PREFIXES:
        if value.startswith(prefix):
            return "r_" + value.removeprefix(prefix)
    return value


_run_id = run_id_of


async def _check_owner(request: Request, req: Requirement, record: ApiKeyRecord,
                       family: Family) -> None:
    if req.others is None or req.owner_param is None or allows(record, req.others):
        return
    value = request.path_params.get(req.owner_param)
    if not isinstance(value, str):
        return
    service = request.app.state.service
    if req.owner_param == "sweep_id":  # a sweep (workbench.sweeps): the key that created it
        try:
            owner = await run_in_threadpool(service.sweeps.owner, value)
        except KeyError:
            return  # unknown: the route answers 404
        if owner != record.key_id:
            who = "another key" if owner else "no recorded key"
            raise family.forbidden(record, req.others, f"sweep {value} was created by {who}")
        return
    run_id = _run_id(value)
    if not run_id.startswith("r_") or service.store.get_run(run_id) is None:
        return  # unknown: the route answers 404
    owner = await run_in_threadpool(run_owner, service, run_id)
    if owner != record.key_id:
        who = "another key" if owner else "no recorded key"
        raise family.forbidden(record, req.others, f"run {run_id} was started by {who}")


_cache: dict[Requirement, Callable[..., Any]] = {}


def requires(scope: str, *, family: str = "api", others: str | None = None,
             owner_param: str | None = None) -> Callable[..., Any]:
    """The dependency of a route that needs ``scope`` (read, train or admin). It returns the
    caller's key record (None only for a ``--trainer-open`` loopback request).

    ``others`` with ``owner_param``: acting on a run another key started needs ``others``
    (``requires("train", others="admin", owner_param="run_id")`` for cancelling)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; allowed: {', '.join(SCOPES)}")
    if others is not None and others not in SCOPES:
        raise ValueError(f"unknown scope {others!r}")
    if (others is None) != (owner_param is None):
        raise ValueError("give others and owner_param together")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    req = Requirement(scope, family, others, owner_param)
    if req in _cache:
        return _cache[req]
    fam = FAMILIES[family]

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> ApiKeyRecord | None:
        if family == "trainer" and trainer_open_applies(request):
            if scope in TRAINER_OPEN_GRANTS:
                return None
        token = credentials.credentials if credentials else None
        record = verified_key(request, token)
        if record is None:
            raise fam.unauthenticated(request, token)
        if not allows(record, scope):
            raise fam.forbidden(record, scope, None)
        await _check_owner(request, req, record, fam)
        return record

    dependency.__name__ = f"requires_{scope}" + (f"_{family}" if family != "api" else "")
    dependency.__qualname__ = dependency.__name__
    dependency.__policy__ = req  # type: ignore[attr-defined]
    _cache[req] = dependency
    return dependency


def websocket_requires(scope: str, *, family: str = "v1") -> Callable[..., Any]:
    """The declaration of a websocket route (its handler authenticates, often from the first
    message, and checks with :func:`allows` against ``dependency.__policy__.scope``)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    req = Requirement(scope, family)

    async def declaration() -> Requirement:
        return req

    declaration.__name__ = f"websocket_requires_{scope}"
    declaration.__policy__ = req  # type: ignore[attr-defined]
    return declaration


# The MNIST MLP API's parameter aliases (``/api/v1`` has its own in ``v1.security``).
ReadKey = Annotated[ApiKeyRecord, Depends(requires("read"))]
TrainKey = Annotated[ApiKeyRecord, Depends(requires("train"))]
AdminKey = Annotated[ApiKeyRecord, Depends(requires("admin"))]

# ---- routes this package does not decorate -----------------------------------------------------
#: Public on purpose: (method, path) -> why. "WS" is a websocket, "MOUNT" a mounted app (the
#: path is its prefix; every path under it).
PUBLIC_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/api/health"): "readiness probe",
    ("GET", "/api/v1/system/health"): "liveness probe of /api/v1",
    ("GET", "/api/v1/system/version"): "server and API versions",
    ("GET", "/api/openapi.json"): "the OpenAPI document",
    ("GET", "/api/explorer"): "the API explorer page (requests it sends carry the user's key)",
    ("GET", "/docs/oauth2-redirect"): "FastAPI's Swagger UI OAuth helper page (static HTML)",
    ("POST", "/login"): "the app's login form (it checks the key it is given)",
    ("POST", "/logout"): "ends the app's login session named by the cookie (if any)",
    ("GET", "/favicon.ico"): "the app's icon",
    ("GET", "/components/{path:path}"): "Panel component assets (installed packages' files)",
    ("MOUNT", "/static"): "Panel/Bokeh JS and CSS (installed packages' files)",
    ("MOUNT", "/static/extensions/panel"): "Panel extension assets",
}

#: Routes declared here because their module is not part of the API package: (method, path)
#: -> scope. The Panel app (``workbench.ui.server``) enforces its login with
#: ``workbench.ui.login.key_valid``.
EXTERNAL: dict[tuple[str, str], Requirement] = {
    ("GET", "/"): Requirement(APP_SCOPE, "ui"),
    ("WS", "/ws"): Requirement(APP_SCOPE, "ui"),
}


# ---- walking an app --------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteInfo:
    kind: str  # "http", "websocket" or "mount"
    methods: tuple[str, ...]  # ("WS",) / ("MOUNT",) for websockets and mounts
    path: str
    route: Any  # the route (or FastAPI's effective route context)
    requirement: Requirement | None
    source: str  # "dependency", "public", "external" or "none"


def _dependant_requirements(dependant: Any) -> Iterator[Requirement]:
    if dependant is None:
        return
    call = getattr(dependant, "call", None)
    req = getattr(call, "__policy__", None)
    if isinstance(req, Requirement):
        yield req
    for sub in getattr(dependant, "dependencies", ()) or ():
        yield from _dependant_requirements(sub)


def declared_requirement(route: Any) -> Requirement | None:
    """The strictest requirement among a route's dependencies (router-level ones included)."""
    found = list(_dependant_requirements(getattr(route, "dependant", None)))
    if not found:
        return None
    best = found[0]
    for req in found[1:]:
        if _RANK[req.scope] > _RANK[best.scope] or (req.others and not best.others):
            best = req
    return best


def _leaves(routes: Any) -> Iterator[Any]:
    """Routes with their effective path and dependencies (FastAPI >= 0.120 keeps included
    routers as ``_IncludedRouter`` entries; older versions copy their routes flat)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        yield from routes
        return
    yield from iter_route_contexts(list(routes))


def iter_app_routes(app: Any, prefix: str = "") -> Iterator[RouteInfo]:
    """Every route ``app`` mounts, websockets and mounted sub-apps included, each with the
    requirement it declares (None: undeclared)."""
    from starlette.routing import Mount, WebSocketRoute

    for route in _leaves(getattr(app, "routes", ())):
        original = getattr(route, "original_route", route)
        path = prefix + (getattr(route, "path", None) or "")
        if isinstance(original, Mount):
            sub_routes = getattr(original, "routes", None) or []
            if sub_routes and not _is_static(original):
                yield from iter_app_routes(original, path)
                continue
            yield _info("mount", ("MOUNT",), path, route)
        elif isinstance(original, WebSocketRoute):
            yield _info("websocket", ("WS",), path, route)
        else:
            methods = tuple(sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"})) \
                or ("GET",)
            yield _info("http", methods, path, route)


def _is_static(mount: Any) -> bool:
    from starlette.staticfiles import StaticFiles

    return isinstance(getattr(mount, "app", None), StaticFiles)


def _info(kind: str, methods: tuple[str, ...], path: str, route: Any) -> RouteInfo:
    req = declared_requirement(route)
    public = [m for m in methods if (m, path) in PUBLIC_ROUTES]
    external = [EXTERNAL[(m, path)] for m in methods if (m, path) in EXTERNAL]
    if req is not None:
        source = "dependency"
    elif external:
        req, source = external[0], "external"
    elif public and len(public) == len(methods):
        req, source = Requirement(PUBLIC, "public"), "public"
    else:
        source = "none"
    return RouteInfo(kind, methods, path, route, req, source)


def route_requirement(app: Any, path: str, method: str) -> Requirement:
    """The requirement ``app``'s route for ``method path`` declares (``LookupError``: none)."""
    for info in iter_app_routes(app):
        if info.path == path and method in info.methods and info.requirement is not None:
            return info.requirement
    raise LookupError(f"no declared route {method} {path}")


def route_table(app: Any) -> list[tuple[str, str, str]]:
    """(methods, path, requirement) of every route, for docs and reports."""
    return [(",".join(r.methods), r.path, r.requirement.describe() if r.requirement else "?")
            for r in iter_app_routes(app)]
