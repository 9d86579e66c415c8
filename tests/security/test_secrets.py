"""Secrets at rest and in the browser, against real ``workbench serve`` processes.

- the app's login cookie is a server-side session id (never the key), HttpOnly,
  SameSite=Strict, 12 h, renewed on use; logout and revoking the key end the session;
- key hashes are HMAC-SHA256 with ``$WORKBENCH_HOME/secret.key`` (0600), so the database alone
  does not allow guessing keys offline; old sha256 hashes still verify and are upgraded;
- the last usable admin key cannot be revoked (409); ``WORKBENCH_TOKEN`` at start restores a
  revoked bootstrap key; ``workbench serve`` prints a key only when it generated it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.utils.server import LiveServer

TOKEN = "wb_secrets-test-admin-token"


def _keys_table(home: Path) -> dict[str, str]:
    """name -> stored hash, read from the database file (the server must be stopped)."""
    con = duckdb.connect(str(home / "workbench.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT name, hash FROM api_keys").fetchall())
    finally:
        con.close()


def _hmac(home: Path, key: str) -> str:
    secret = (home / "secret.key").read_text().strip().encode()
    return "hmac-sha256$" + hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def _cookie(response: httpx.Response) -> tuple[str, str, str]:
    """(name, value, attributes) of the response's Set-Cookie."""
    header = response.headers["set-cookie"]
    pair, _, attributes = header.partition(";")
    name, _, value = pair.partition("=")
    return name.strip(), value.strip(), attributes.lower()


def _page(server: LiveServer, cookie: tuple[str, str, str]) -> httpx.Response:
    return httpx.get(server.url + "/", headers={"Cookie": f"{cookie[0]}={cookie[1]}"},
                     timeout=60, follow_redirects=False)


def _admin(server: LiveServer, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1",
                        headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _key_id(client: httpx.Client, name: str) -> str:
    return next(k["key_id"] for k in client.get("/auth/keys").json()["data"] if k["name"] == name)


@pytest.fixture
def server(server_factory) -> LiveServer:
    return server_factory(token=TOKEN)


def test_login_cookie_is_a_session_not_the_key(server):
    login = httpx.get(f"{server.url}/?token={TOKEN}", follow_redirects=False, timeout=60)
    assert login.status_code == 303
    cookie = _cookie(login)
    name, value, attributes = cookie
    assert name == f"workbench_key_{server.port}"
    assert value.startswith("wbs_") and TOKEN not in login.headers["set-cookie"]
    assert len(value) >= 40  # 256 random bits
    assert "httponly" in attributes and "samesite=strict" in attributes
    max_age = int(re.search(r"max-age=(\d+)", attributes).group(1))
    assert 3600 <= max_age <= 12 * 3600  # ~12 h, not 30 days
    assert "path=" not in attributes or "path=/" in attributes  # the app's folder
    # the session opens the app, and each page load renews its cookie
    page = _page(server, cookie)
    assert page.status_code == 200 and "nn-workbench" in page.text
    assert _cookie(page)[1] == value and "max-age=" in _cookie(page)[2]
    # it is no API key: the REST API does not take it (nor ever reads cookies)
    assert httpx.get(server.url + "/api/v1/auth/keys", timeout=30,
                     headers={"Authorization": f"Bearer {value}"}).status_code == 401
    assert httpx.get(server.url + "/api/v1/auth/keys", timeout=30,
                     headers={"Cookie": f"{name}={value}"}).status_code == 401
    # a guessed or made-up session id opens nothing
    assert _page(server, (name, "wbs_" + "A" * 43, "")).status_code == 401
    # logout ends it at once and clears the cookie
    out = httpx.post(server.url + "/logout", headers={"Cookie": f"{name}={value}"}, timeout=30)
    assert out.status_code == 200 and "logged out" in out.text
    assert _cookie(out)[0] == name and ("max-age=0" in _cookie(out)[2]
                                        or "expires=" in _cookie(out)[2])
    again = _page(server, cookie)
    assert again.status_code == 401 and "session ended" in again.text


def test_revoking_a_key_ends_its_sessions(server):
    with _admin(server) as admin:
        created = admin.post("/auth/keys", json={"name": "browser", "permissions": ["train"]})
        assert created.status_code == 201, created.text
        key, key_id = created.json()["data"]["key"], created.json()["data"]["key_id"]
        sessions = []
        for _ in range(2):  # two browsers
            login = httpx.get(f"{server.url}/?token={key}", follow_redirects=False, timeout=60)
            sessions.append(_cookie(login))
        assert sessions[0][1] != sessions[1][1]
        assert all(_page(server, c).status_code == 200 for c in sessions)
        assert admin.delete(f"/auth/keys/{key_id}").status_code == 200
    assert all(_page(server, c).status_code == 401 for c in sessions)


def test_last_admin_key_cannot_be_revoked_and_the_token_restores_it(server_factory):
    server = server_factory(token=TOKEN)
    home = server.home
    with _admin(server) as admin:
        bootstrap = _key_id(admin, "bootstrap-admin")
        refused = admin.delete(f"/auth/keys/{bootstrap}")
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert error["code"] == "CONFLICT" and "last usable admin key" in error["message"]
        assert error["details"]["field"] == "key_id"
        assert admin.get("/auth/keys").status_code == 200  # still in
        second = admin.post("/auth/keys", json={"name": "admin-2", "permissions": ["admin"]})
        other_token = second.json()["data"]["key"]
        assert admin.delete(f"/auth/keys/{bootstrap}").status_code == 200
    with _admin(server) as admin:
        assert admin.get("/auth/keys").status_code == 401  # revoked
    with _admin(server, other_token) as admin2:
        own = _key_id(admin2, "admin-2")
        assert admin2.delete(f"/auth/keys/{own}").status_code == 409  # now the last one
    server.stop()
    # Restarting with the same WORKBENCH_TOKEN lets the operator in again.
    restarted = server_factory(home=home, token=TOKEN)
    with _admin(restarted) as admin:
        assert admin.get("/auth/keys").status_code == 200
        keys = {k["name"]: k["status"] for k in admin.get("/auth/keys").json()["data"]}
    assert keys["bootstrap-admin"] == "active"


def test_hashes_are_keyed_and_old_sha256_hashes_upgrade(server_factory, tmp_path):
    """A store written before keyed hashing (bare sha256 digests): nobody loses access, and
    after the first use the database holds only HMAC hashes with the home's secret."""
    from workbench.store import Store

    home = tmp_path / "legacy-home"
    home.mkdir()
    reader = "wb_an-old-read-key"
    store = Store(home / "workbench.duckdb")
    store.create_api_key(name="bootstrap-admin", key_hash=hashlib.sha256(TOKEN.encode())
                         .hexdigest(), permissions="admin")
    store.create_api_key(name="old-reader", key_hash=hashlib.sha256(reader.encode()).hexdigest(),
                         permissions="read")
    store.close()

    server = server_factory(home=home, token=TOKEN)
    with _admin(server) as admin:  # the bootstrap key (re-hashed at start)
        assert admin.get("/auth/keys").status_code == 200
    with _admin(server, reader) as old:  # an old key, upgraded on its first use
        assert old.get("/tasks").status_code == 200
        assert old.get("/tasks").status_code == 200
    assert httpx.get(server.url + "/api/v1/tasks", timeout=30,
                     headers={"Authorization": "Bearer wb_not-a-key"}).status_code == 401
    log = server.log()
    server.stop()

    secret = home / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) >= 64
    hashes = _keys_table(home)
    assert hashes["bootstrap-admin"] == _hmac(home, TOKEN)
    assert hashes["old-reader"] == _hmac(home, reader)
    assert not any(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes.values())  # no sha256 left
    # not printed: the key came from WORKBENCH_TOKEN
    assert TOKEN not in log and "?token=" not in log


def test_serve_prints_the_key_only_when_it_generates_it(server_factory):
    first = server_factory(token="")  # no WORKBENCH_TOKEN: the store is empty, a key is made
    log = first.log()
    links = re.findall(r"/\?token=(wb_[\w-]+)", log)
    assert len(links) == 1, log
    key = links[0]
    assert httpx.get(first.url + "/api/v1/auth/keys", timeout=30,
                     headers={"Authorization": f"Bearer {key}"}).status_code == 200
    home = first.home
    first.stop()
    second = server_factory(home=home, token="")
    new_log = second.log()
    assert key not in new_log and "?token=" not in new_log, new_log
    second.stop()
    # WORKBENCH_TOKEN is the operator's: never printed, at any start
    third = server_factory(home=home, token=TOKEN)
    assert TOKEN not in third.log() and "?token=" not in third.log(), third.log()


def test_a_copied_database_does_not_verify_keys_without_the_secret(tmp_path):
    from workbench.auth import KeyRing, hash_key, legacy_hash_key
    from workbench.store import Store

    store = Store(tmp_path / "wb.duckdb")
    try:
        ring = KeyRing(store, secret=b"1" * 32)
        key, record = ring.create(name="k", permissions="read")
        assert record.hash == hash_key(key, b"1" * 32) != legacy_hash_key(key)
        assert ring.verify(key) is not None
        assert KeyRing(store, secret=b"2" * 32).verify(key) is None  # another home's secret
    finally:
        store.close()
