"""One authorization policy over every API family (``workbench.api.policy``).

In-process (starlette's TestClient) on a temporary store, the app built the way
``workbench serve`` builds it (``workbench.server.build_app``: REST API, websockets, the Panel
app). The service never starts a run (``max_workers = 0``): runs stay queued, so they can be
cancelled, and nothing trains.

- the walk: every route the app mounts (included routers, websockets, mounted sub-apps)
  declares a scope, or is on the policy's short public allowlist;
- the matrix: each route x {no key, read, train, admin} gets 401 without a key, 403 with too
  weak a scope (in its family's error shape), neither with enough scope; a public route
  answers the same whoever asks;
- the regressions: a read key cannot create a model, train, cancel, or use the trainer API; a
  train key cannot cancel another key's run, admin can; ``--trainer-open``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from tests.utils.factories import mlp
from workbench.api import policy
from workbench.api.policy import PUBLIC, RouteInfo, iter_app_routes

KEYS = ("none", "read", "train", "admin")
RANK = {"none": 0, "read": 1, "train": 2, "admin": 3}
SCOPE_RANK = {PUBLIC: 0, "read": 1, "train": 2, "admin": 3}
TRAINER_JOB = {
    "model_config": {"layer_sizes": [784, 32, 10]},
    "dataset_config": {"name": "MNIST", "batch_size": 256, "val_batch_size": 1000,
                       "normalize": {"mean": [0.1307], "std": [0.3081]}},
}
CORTEX_JOB = {"neural_model_config": {"input_dim": 784, "hidden_dims": [16], "output_dim": 10},
              "training_config": {"max_epochs": 1}, "limit": 100}

# Known gaps: (method, path, key) whose outcome differs from the policy for a reason outside
# the API package. The matrix reports them instead of failing, and fails once one is fixed
# (so the entry gets removed). None today: the app's login checks the policy's scope too.
KNOWN_GAPS: dict[tuple[str, str, str], str] = {}


# ---- the app -------------------------------------------------------------------------------------
def _build(service: Any) -> FastAPI:
    try:
        from workbench.server import build_app
    except ImportError:  # before the composition root existed
        from workbench.api import create_app

        app = create_app(service, close_service=True)
        try:
            from workbench.ui.server import mount
        except ImportError:
            return app
        mount(app, service)
        return app
    return build_app(service, close_service=True)


class Env:
    def __init__(self, app: FastAPI, client: TestClient, tokens: dict[str, str | None],
                 key_ids: dict[str, str]):
        self.app, self.client, self.tokens, self.key_ids = app, client, tokens, key_ids
        self.service = app.state.service

    def headers(self, who: str) -> dict[str, str]:
        token = self.tokens[who]
        return {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, who: str, method: str, path: str, **kwargs: Any):
        return self.client.request(method, path, headers=self.headers(who), **kwargs)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    from workbench.api.v1.security import RateLimiter
    from workbench.service import Workbench
    from workbench.store import Store

    service = Workbench(Store(tmp_path_factory.mktemp("scopes") / "wb.duckdb"))
    service.max_workers = 0  # runs stay queued: cancellable, and nothing trains
    app = _build(service)
    app.state.v1_limiter = RateLimiter(0)  # the matrix sends hundreds of /api/v1 requests
    keyring = app.state.keyring
    tokens: dict[str, str | None] = {"none": None}
    key_ids: dict[str, str] = {}
    for name, scope in (("read", "read"), ("train", "train"), ("train2", "train"),
                        ("admin", "admin")):
        tokens[name], record = keyring.create(name=f"scopes-{name}", permissions=scope)
        key_ids[name] = record.key_id
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(app, client, tokens, key_ids)


@pytest.fixture(scope="module")
def routes(env) -> list[RouteInfo]:
    return list(iter_app_routes(env.app))


# ---- the walk --------------------------------------------------------------------------------
def test_every_route_declares_a_scope(routes):
    undeclared = [f"{','.join(r.methods)} {r.path} ({type(r.route).__name__})"
                  for r in routes if r.requirement is None]
    assert not undeclared, (
        "routes without a declared scope (add Depends(workbench.api.policy.requires(...)) or, "
        "if it must be public, an entry in policy.PUBLIC_ROUTES):\n  " + "\n  ".join(undeclared))
    public = sorted(f"{','.join(r.methods)} {r.path}" for r in routes if r.source == "public")
    assert len(public) <= len(policy.PUBLIC_ROUTES), public
    # Nothing under the API's own prefixes is public except the documented probes and docs.
    for r in routes:
        if r.source == "public" and r.path.startswith("/api"):
            assert (r.methods[0], r.path) in policy.PUBLIC_ROUTES


def test_the_walk_covers_the_openapi_document(env, routes):
    """Cross-check the walker against FastAPI's own view of the app."""
    # OpenAPI names a path parameter without its converter: {name:path} is {name} there
    walked = {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", r.path)) for r in routes for m in r.methods}
    for path, operations in env.app.openapi()["paths"].items():
        for method in operations:
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                assert (method.upper(), path) in walked, f"{method.upper()} {path} not walked"


def test_the_walk_sees_nested_routers_websockets_and_mounts():
    """A route added later anywhere (a nested router, a websocket, a mounted app) is seen, and
    without a declaration it is undeclared."""
    from starlette.routing import Mount

    inner = APIRouter(prefix="/inner")

    @inner.get("/open")
    def open_route() -> dict:
        return {}

    @inner.post("/declared", dependencies=[Depends(policy.requires("train"))])
    def declared() -> dict:
        return {}

    @inner.websocket("/sock")
    async def sock(websocket: WebSocket) -> None:  # pragma: no cover - never connected
        pass

    outer = APIRouter(prefix="/api/later", dependencies=[Depends(policy.requires("read"))])
    outer.include_router(inner)
    sub = FastAPI()

    @sub.get("/thing")
    def thing() -> dict:
        return {}

    app = FastAPI()
    app.include_router(outer)
    app.routes.append(Mount("/sub", app=sub))
    found = {(r.methods, r.path): r for r in iter_app_routes(app)}
    assert found[(("POST",), "/api/later/inner/declared")].requirement.scope == "train"
    # router-level read counts, the strictest declaration wins
    assert found[(("GET",), "/api/later/inner/open")].requirement.scope == "read"
    assert found[(("WS",), "/api/later/inner/sock")].requirement.scope == "read"
    assert found[(("GET",), "/sub/thing")].requirement is None
    bare = FastAPI()
    bare.include_router(inner)
    assert {r.path for r in iter_app_routes(bare) if r.requirement is None} >= {
        "/inner/open", "/inner/sock"}


# ---- the matrix ------------------------------------------------------------------------------
def _concrete(path: str) -> str:
    """Path parameters as ids nothing has (x0): the route's own 404/400 past the policy."""
    return re.sub(r"\{[^}:]+(:[^}]+)?\}", "x0", path)


def _expected(route: RouteInfo, who: str) -> str:
    req = route.requirement
    assert req is not None
    if req.scope == PUBLIC:
        return "public"
    if who == "none":
        return "unauthenticated"
    return "allowed" if RANK[who] >= SCOPE_RANK[req.scope] else "forbidden"


def _http_outcome(route: RouteInfo, response) -> str:
    if response.status_code == 401:
        return "unauthenticated"
    if response.status_code == 403:
        return "forbidden"
    return "allowed"


def _check_shape(route: RouteInfo, response) -> None:
    """A refusal in the route's family's error shape."""
    family = route.requirement.family
    body = response.json() if response.headers.get("content-type", "").startswith(
        "application/json") else None
    if family == "v1":
        assert body["success"] is False
        assert body["error"]["code"] in ("AUTH_INVALID", "FORBIDDEN"), body
    elif family == "trainer":
        assert set(body) == {"error"}, body
    elif family == "api":
        assert "detail" in body and "success" not in body, body
    assert response.headers.get("www-authenticate", "").startswith("Bearer")


def _ws_outcome(env: Env, path: str, who: str) -> str:
    """Connect (key as ``Authorization`` and ``?token=``); refused handshake or an
    AUTH_INVALID / FORBIDDEN message -> refused; otherwise allowed."""
    token = env.tokens[who]
    url = path + (f"?token={token}" if token else "")
    result: dict[str, str] = {}

    def attempt() -> None:
        try:
            # /ws is the Panel app's socket for Bokeh's subprotocol (the route walked here);
            # without it, the same path is /api/v1/ws (workbench.api.v1.ws.DocumentSocket),
            # which the walk checks under its own path.
            protocols = ["bokeh"] if path == "/ws" else None
            with env.client.websocket_connect(url, headers=env.headers(who),
                                              subprotocols=protocols) as ws:
                ws.send_json({"type": "auth", "token": token or ""})
                message = ws.receive_json()
                code = (message.get("error") or {}).get("code") if message.get(
                    "type") == "error" else None
                result["outcome"] = {"AUTH_INVALID": "unauthenticated",
                                     "FORBIDDEN": "forbidden"}.get(code, "allowed")
        except WebSocketDisconnect as exc:
            result["outcome"] = "refused" if exc.code == 1008 else "allowed"
        except Exception:  # the handler itself ran (past the gate) and failed on our probe
            result.setdefault("outcome", "allowed")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(30)
    assert "outcome" in result, f"websocket {path} as {who}: no answer within 30 s"
    return result["outcome"]


def _matches(expected: str, outcome: str) -> bool:
    if outcome == "refused":  # a refused handshake cannot say which
        return expected in ("unauthenticated", "forbidden")
    return expected == outcome


def test_every_route_times_every_key(env, routes, record_property, capsys):
    checks = 0
    tally: dict[str, int] = {}
    failures: list[str] = []
    gaps_seen: set[tuple[str, str, str]] = set()
    for route in routes:
        req = route.requirement
        assert req is not None, route.path
        path = _concrete(route.path)
        for method in route.methods:
            public_statuses: set[int] = set()
            for who in KEYS:
                checks += 1
                expected = _expected(route, who)
                if route.kind == "websocket":
                    outcome = _ws_outcome(env, path, who)
                    response = None
                else:
                    if route.kind == "mount":
                        response = env.call(who, "GET", path.rstrip("/") + "/x0")
                    else:
                        response = env.call(who, method, path,
                                            **({"json": {}} if method == "POST" else {}))
                    outcome = _http_outcome(route, response)
                if expected == "public":
                    if response is not None:
                        public_statuses.add(response.status_code)
                        ok = response.status_code != 403
                    else:
                        ok = outcome != "refused"
                else:
                    ok = _matches(expected, outcome)
                    if ok and response is not None and outcome != "allowed":
                        _check_shape(route, response)
                tally[expected] = tally.get(expected, 0) + 1
                gap = (method, route.path, who)
                if gap in KNOWN_GAPS:
                    gaps_seen.add(gap)
                    assert not ok, f"known gap fixed, remove it from KNOWN_GAPS: {gap}"
                    continue
                if not ok:
                    status = response.status_code if response is not None else outcome
                    failures.append(f"{method} {route.path} as {who}: expected {expected} "
                                    f"(needs {req.describe()}), got {status}")
            if len(public_statuses) > 1:
                failures.append(f"{method} {route.path} is public but answers "
                                f"{sorted(public_statuses)} depending on the key")
    mounted = {(m, r.path) for r in routes for m in r.methods}
    assert gaps_seen == {g for g in KNOWN_GAPS if g[:2] in mounted}
    n_routes = sum(len(r.methods) for r in routes)
    record_property("routes", n_routes)
    record_property("route_scope_checks", checks)
    with capsys.disabled():
        print(f"\n[scopes] {n_routes} routes x {len(KEYS)} callers = {checks} checks "
              f"({', '.join(f'{k} {v}' for k, v in sorted(tally.items()))}), "
              f"{len(KNOWN_GAPS)} known gaps")
    assert not failures, "\n".join(failures)
    assert n_routes >= 50 and checks == n_routes * len(KEYS)


def test_app_login_needs_the_train_scope(env):
    assert env.call("read", "GET", "/").status_code in (401, 403)
    assert _ws_outcome(env, "/ws", "read") == "refused"


# ---- the regressions -------------------------------------------------------------------------
def _model(env: Env, who: str = "admin") -> str:
    response = env.call(who, "POST", "/api/models", json={"architecture": mlp(16)})
    assert response.status_code == 200, response.text
    return response.json()["model_id"]


def _run(env: Env, who: str, model_id: str | None = None) -> str:
    model_id = model_id or _model(env)
    response = env.call(who, "POST", f"/api/models/{model_id}/train",
                        json={"hyperparams": {"epochs": 1}, "limit": 100})
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def _state(env: Env, run_id: str) -> str:
    return env.call("read", "GET", f"/api/runs/{run_id}").json()["state"]


def test_a_read_key_cannot_create_train_or_cancel(env):
    response = env.call("read", "POST", "/api/models", json={"architecture": mlp(16)})
    assert response.status_code == 403 and "'train'" in response.json()["detail"]
    model_id = _model(env)
    assert env.call("read", "GET", f"/api/models/{model_id}").status_code == 200
    response = env.call("read", "POST", f"/api/models/{model_id}/train", json={})
    assert response.status_code == 403
    assert env.call("read", "GET", f"/api/models/{model_id}/runs").json()["items"] == []
    run_id = _run(env, "train", model_id)
    assert env.call("read", "POST", f"/api/runs/{run_id}/cancel").status_code == 403
    response = env.call("read", "DELETE", f"/api/v1/tasks/{run_id}")
    assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"
    assert _state(env, run_id) == "queued"


def test_a_read_key_cannot_use_the_trainer_api_but_may_read_it(env):
    for method, path, body in (
        ("POST", "/api/jobs", TRAINER_JOB),
        ("POST", "/api/devices/register", {"ip": "127.0.0.1", "port": 5001, "job_id": "1"}),
        ("DELETE", "/api/devices/5001", None),
        ("POST", "/api/network/initialize/1", None),
        ("POST", "/api/network/train/1", {"epochs": 1, "learning_rate": 0.1}),
    ):
        response = env.call("read", method, path, **({"json": body} if body else {}))
        assert response.status_code == 403, (method, path, response.text)
        assert set(response.json()) == {"error"}
    assert env.call("read", "GET", "/api/jobs").status_code == 200
    assert env.call("read", "GET", "/api/previous_teraflops").status_code in (200, 404)


def test_trainer_api_train_for_jobs_admin_for_devices(env):
    response = env.call("train", "POST", "/api/jobs", json=TRAINER_JOB)
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    device = {"ip": "127.0.0.1", "port": 5999, "job_id": job_id}
    response = env.call("train", "POST", "/api/devices/register", json=device)
    assert response.status_code == 403 and "'admin'" in response.json()["error"]
    assert env.call("train", "DELETE", "/api/devices/5999").status_code == 403
    assert env.call("admin", "POST", "/api/devices/register", json=device).status_code == 200
    assert env.call("admin", "DELETE", "/api/devices/5999").status_code == 200


def test_cancelling_another_keys_run_needs_admin(env):
    # the MNIST MLP API
    run_id = _run(env, "train")
    response = env.call("train2", "POST", f"/api/runs/{run_id}/cancel")
    assert response.status_code == 403 and "another key" in response.json()["detail"]
    assert _state(env, run_id) == "queued"
    response = env.call("admin", "POST", f"/api/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    # its owner may
    run_id = _run(env, "train")
    response = env.call("train", "POST", f"/api/runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    # /api/v1 the same way, across APIs: a job submitted in v1, cancelled in either
    response = env.call("train", "POST", "/api/v1/jobs/submit", json=CORTEX_JOB)
    assert response.status_code == 202, response.text
    task_id, job_id = response.json()["data"]["task_id"], response.json()["data"]["job_id"]
    response = env.call("train2", "DELETE", f"/api/v1/tasks/{task_id}")
    assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"
    assert response.json()["error"]["details"]["required"] == "admin"
    assert env.call("train2", "DELETE", f"/api/v1/tasks/{job_id}").status_code == 403
    assert env.call("train2", "POST", f"/api/runs/{task_id}/cancel").status_code == 403
    assert _state(env, task_id) == "queued"
    response = env.call("train", "DELETE", f"/api/v1/tasks/{job_id}")
    assert response.status_code == 200 and response.json()["data"]["status"] == "cancelled"
    # a v1 job of train2, cancelled by admin
    response = env.call("train2", "POST", "/api/v1/jobs/submit", json=CORTEX_JOB)
    task_id = response.json()["data"]["task_id"]
    assert env.call("train", "DELETE", f"/api/v1/tasks/{task_id}").status_code == 403
    assert env.call("admin", "DELETE", f"/api/v1/tasks/{task_id}").status_code == 200


def test_a_run_without_a_recorded_owner_needs_admin_to_cancel(env):
    model = env.service.create_model(mlp(16), None, name="cli-like")
    run = env.service.start_run(model.model_id, limit=100)  # as the CLI or the app start one
    assert policy.run_owner(env.service, run.run_id) is None
    response = env.call("train", "POST", f"/api/runs/{run.run_id}/cancel")
    assert response.status_code == 403 and "no recorded key" in response.json()["detail"]
    assert env.call("admin", "POST", f"/api/runs/{run.run_id}/cancel").status_code == 200


def test_runs_record_the_key_that_started_them(env):
    run_id = _run(env, "train")
    assert policy.run_owner(env.service, run_id) == env.key_ids["train"]
    response = env.call("train2", "POST", "/api/v1/jobs/submit", json=CORTEX_JOB)
    task_id = response.json()["data"]["task_id"]
    assert policy.run_owner(env.service, task_id) == env.key_ids["train2"]
    for rid in (run_id, task_id):
        env.call("admin", "POST", f"/api/runs/{rid}/cancel")


def test_trainer_open_is_loopback_without_credentials_only(env):
    app = env.app
    app.state.trainer_open = True
    try:
        with TestClient(app, client=("127.0.0.1", 40000)) as loopback:
            # the document's curl flow: no header at all
            assert loopback.get("/api/jobs").status_code == 200
            response = loopback.post("/api/jobs", json=TRAINER_JOB)
            assert response.status_code == 200, response.text
            job_id = response.json()["job_id"]
            device = {"ip": "127.0.0.1", "port": 5998, "job_id": job_id}
            assert loopback.post("/api/devices/register", json=device).status_code == 200
            assert loopback.delete("/api/devices/5998").status_code == 200
            # a key, when given, is what counts
            read = {"Authorization": f"Bearer {env.tokens['read']}"}
            assert loopback.post("/api/jobs", json=TRAINER_JOB, headers=read).status_code == 403
            bad = {"Authorization": "Bearer nope"}
            assert loopback.get("/api/jobs", headers=bad).status_code == 401
            # only the trainer family is opened
            assert loopback.post("/api/models", json={"architecture": mlp(16)}).status_code == 401
            assert loopback.get("/api/v1/tasks").status_code == 401
        assert env.client.get("/api/jobs").status_code == 401  # not loopback
    finally:
        app.state.trainer_open = False


def test_the_policy_table_is_printable(env, capsys):
    table = policy.route_table(env.app)
    assert all(scope != "?" for _, _, scope in table)
    with capsys.disabled():
        print()
        for methods, path, scope in table:
            print(f"[scopes] {methods:7} {path:48} {scope}")
