"""Cross-site requests against real ``workbench serve`` processes (``workbench.api.csrf``).

A page on another site can make a browser send "simple" requests -- POSTs with a ``text/plain``,
form or typeless body and no preflight -- carrying the page's ``Origin``. Under
``--trainer-open`` (loopback needs no key) that created, initialized and trained jobs. Every
state-changing route of every family must now refuse a body that is not JSON (415) and a
foreign ``Origin`` (403), in its family's error shape, while same-origin and non-browser
clients, the binary inference body and the app's login form keep working.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.utils.factories import mlp
from tests.utils.server import TOKEN, LiveServer, free_port
from workbench.api.csrf import OTHER_TYPES, normalize_allowed, same_origin

EVIL = "http://evil.example"
JOB = {"model_config": {"layer_sizes": [784, 32, 10]},
       "dataset_config": {"name": "MNIST", "batch_size": 256, "val_batch_size": 1000}}
# What a cross-site page can send without a CORS preflight (fetch no-cors / a form / a Blob).
SIMPLE_BODIES = [
    ("text/plain", json.dumps(JOB).encode()),
    ("text/plain;charset=UTF-8", json.dumps(JOB).encode()),
    ("application/x-www-form-urlencoded", b"a=" + json.dumps(JOB).encode()),
    ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n"
     + json.dumps(JOB).encode() + b"\r\n--x--\r\n"),
    (None, json.dumps(JOB).encode()),  # a Blob body: no Content-Type at all
]


def _start(home, *args: str, token: str = TOKEN) -> LiveServer:
    """``workbench serve`` with extra flags (``--trainer-open``), as tests/utils/server does."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_TOKEN": token,
           "WORKBENCH_OFFLINE": "1", "WORKBENCH_WORKERS": "1"}
    log_path = home / f"server-{port}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", "--port",
                                    str(port), "--workers", "1", *args],
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(home, port, token, process, log_path, env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, server.log()
        try:
            if httpx.get(server.url + "/api/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise AssertionError(f"server did not start:\n{server.log()}")


@pytest.fixture(scope="module")
def open_server(tmp_path_factory) -> Iterator[LiveServer]:
    """``workbench serve --trainer-open``: the configuration the finding was reproduced on."""
    server = _start(tmp_path_factory.mktemp("csrf-open"), "--trainer-open")
    try:
        yield server
    finally:
        server.stop()


def _send(url: str, method: str, *, content_type: str | None, body: bytes = b"",
          origin: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    h = dict(headers or {})
    if content_type is not None:
        h["Content-Type"] = content_type
    if origin is not None:
        h["Origin"] = origin
    return httpx.request(method, url, content=body or None, headers=h, timeout=30)


def _family(path: str) -> str:
    if path.startswith(("/api/v1", "/api/plugin-core")):  # the conventions' envelope
        return "v1"
    if re.match(r"^/api/(jobs|devices|network|previous_teraflops)(/|$)", path):
        return "trainer"
    return "api"


def _assert_shape(response: httpx.Response, family: str, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    if family == "v1":
        assert body["success"] is False and body["error"]["code"] in (
            "FORBIDDEN", "UNSUPPORTED_MEDIA_TYPE"), body
        assert body["error"]["details"]["field"] in ("Origin", "Content-Type")
    elif family == "trainer":
        assert set(body) == {"error"} and body["error"], body
    else:
        assert set(body) == {"detail", "errors"} and body["errors"], body


def test_cross_site_page_cannot_drive_the_trainer_api(open_server, record_property):
    """The reproduced attack: create, initialize and train a job with no-preflight requests
    from another site. Every one is refused and nothing is created."""
    base = open_server.url + "/api"
    tried = 0
    for content_type, body in SIMPLE_BODIES:
        for origin in (EVIL, "null", None):
            r = _send(base + "/jobs", "POST", content_type=content_type, body=body, origin=origin)
            tried += 1
            assert r.status_code in (403, 415), (content_type, origin, r.status_code, r.text)
            assert set(r.json()) == {"error"}
    # A JSON body from another site's page (it would need a preflight; a no-cors one is sent).
    r = _send(base + "/jobs", "POST", content_type="application/json",
              body=json.dumps(JOB).encode(), origin=EVIL)
    tried += 1
    _assert_shape(r, "trainer", 403)
    assert "Origin" in r.json()["error"] or "origin" in r.json()["error"]
    # Bodyless steps of the flow (initialize, train, unregister) with the page's Origin.
    for method, path in (("POST", "/network/initialize/1"), ("POST", "/network/train/1"),
                         ("DELETE", "/devices/5001"), ("POST", "/devices/register")):
        r = _send(base + path, method, content_type=None, origin=EVIL)
        tried += 1
        _assert_shape(r, "trainer", 403)
    for content_type, _ in SIMPLE_BODIES:
        r = _send(base + "/network/train/1", "POST", content_type=content_type,
                  body=b'{"epochs": 1, "learning_rate": 0.1}')
        tried += 1
        _assert_shape(r, "trainer", 415)
    assert httpx.get(base + "/jobs", timeout=30).json() == {"jobs": []}  # nothing was created
    record_property("cross_site_trainer_requests_refused", tried)

    # The document's curl flow from the machine itself still works (JSON, no Origin), and so
    # does a same-origin page.
    created = httpx.post(base + "/jobs", json=JOB, timeout=30)
    assert created.status_code == 200, created.text
    same = httpx.post(base + "/jobs", json=JOB, timeout=30,
                      headers={"Origin": open_server.url})
    assert same.status_code == 200, same.text
    assert len(httpx.get(base + "/jobs", timeout=30).json()["jobs"]) == 2


def _state_changing_routes(server: LiveServer) -> list[tuple[str, str]]:
    doc = httpx.get(server.url + "/api/openapi.json", timeout=30).json()
    routes = [(m.upper(), re.sub(r"\{[^}]+\}", "x0", p)) for p, ops in doc["paths"].items()
              for m in ops if m.upper() in ("POST", "PUT", "PATCH", "DELETE")]
    return routes + [("POST", "/login"), ("POST", "/logout")]


def test_every_state_changing_route_refuses_cross_site_requests(live_server, record_property):
    """Every POST/PUT/PATCH/DELETE of the running server (its OpenAPI document, plus the app's
    login and logout), with and without a key: a foreign Origin is 403 and a non-JSON body 415,
    each in the route's family shape, before authentication or the route runs."""
    routes = _state_changing_routes(live_server)
    assert len(routes) >= 20
    families = {_family(p) for _, p in routes}
    assert families == {"api", "v1", "trainer"}
    tried = 0
    for method, path in routes:
        url = live_server.url + path
        family = "api" if path in ("/login", "/logout") else _family(path)
        for headers in ({}, live_server.headers):
            r = _send(url, method, content_type="application/json", body=b"{}", origin=EVIL,
                      headers=headers)
            _assert_shape(r, family, 403)
            r = _send(url, method, content_type=None, origin="null", headers=headers)
            _assert_shape(r, family, 403)
            for content_type, body in SIMPLE_BODIES[:2] + SIMPLE_BODIES[3:]:  # form: below
                if content_type and content_type.split(";")[0] in OTHER_TYPES.get(
                        (method, path), ()):
                    continue  # a type this route takes (the upload's multipart), Origin-checked
                r = _send(url, method, content_type=content_type, body=body, headers=headers)
                _assert_shape(r, family, 415)
                tried += 1
            tried += 2
    # The form type is refused everywhere but the login form (and the binary inference body).
    for method, path in routes:
        if path == "/login":
            continue
        r = _send(live_server.url + path, method, content_type="application/x-www-form-urlencoded",
                  body=b"a=1", headers=live_server.headers)
        _assert_shape(r, "api" if path == "/logout" else _family(path), 415)
        tried += 1
    record_property("cross_site_route_requests_refused", tried)
    print(f"\n[csrf] {len(routes)} state-changing routes, {tried} cross-site requests, "
          "all refused")


def test_legitimate_requests_still_pass(live_server):
    with live_server.http() as http:
        # JSON with a charset, same-origin Origin, an Origin with the default port spelled out
        for headers in ({"Content-Type": "application/json; charset=utf-8"},
                        {"Origin": live_server.url}):
            r = http.post("/api/models", content=json.dumps({"architecture": mlp(16)}).encode(),
                          headers={"Content-Type": "application/json", **headers})
            assert r.status_code == 200, r.text
        # a bodyless POST (no Content-Type) passes the guard: the route answers (404)
        r = http.post("/api/runs/r_nope/cancel")
        assert r.status_code == 404, r.text
        # the binary inference body is not refused by the guard (the route answers itself)
        r = http.post("/api/infer", content=b"\0" * 12, params={"param_id": "p_none",
                                                                  "shape": "1,3"},
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 404, r.text
    # the app's login form: urlencoded, from the same origin, as a browser posts it
    r = httpx.post(live_server.url + "/login", data={"token": live_server.token},
                   headers={"Origin": live_server.url}, follow_redirects=False, timeout=30)
    assert r.status_code == 303 and "set-cookie" in r.headers
    # ... and the same form posted from another site is refused
    r = httpx.post(live_server.url + "/login", data={"token": live_server.token},
                   headers={"Origin": EVIL}, follow_redirects=False, timeout=30)
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_same_origin_rules():
    assert same_origin("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert same_origin("http://LOCALHOST:8765", "localhost:8765")
    assert same_origin("http://example.org", "example.org")
    assert same_origin("https://example.org", "example.org")
    assert same_origin("http://example.org:80", "example.org")
    assert same_origin("http://[::1]:9000", "[::1]:9000")
    for origin, host in (("http://evil.example", "127.0.0.1:8765"),
                         ("http://127.0.0.1:8766", "127.0.0.1:8765"),
                         ("null", "127.0.0.1:8765"), ("file://", "127.0.0.1:8765"),
                         ("http://127.0.0.1:8765@evil.example", "127.0.0.1:8765"),
                         ("http://127.0.0.1:8765", None), ("", "127.0.0.1:8765"),
                         ("http://example.org:443", "example.org")):
        assert not same_origin(origin, host), (origin, host)
    allowed = normalize_allowed(["http://lab.example:8888", "other.example"])
    assert same_origin("http://lab.example:8888", "127.0.0.1:8765", allowed)
    assert same_origin("https://other.example", "127.0.0.1:8765", allowed)
    assert not same_origin("http://lab.example:8889", "127.0.0.1:8765", allowed)
