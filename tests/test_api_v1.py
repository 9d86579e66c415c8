"""The native ``/api/v1`` against a real ``workbench serve`` on 127.0.0.1: envelopes and error
codes, pagination/filter/sort/fields on tasks, jobs, the API-key lifecycle (hash only in DuckDB,
scopes, expiry, revocation), rate limits, analytics and the explorer."""

from __future__ import annotations

import hashlib
import hmac
import time

import duckdb
import httpx
import pytest

from tests.utils.browser import chromium, needs_chromium, watch
from tests.utils.v1 import submit_job, wait_job


@pytest.fixture(scope="module")
def finished_jobs(client):
    """Three tiny completed jobs (one epoch on 300 samples each)."""
    jobs = [submit_job(client, limit=300) for _ in range(3)]
    for job in jobs:
        assert wait_job(client, job["job_id"])["status"] == "completed"
    return jobs


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    return body["error"]


# ---- conventions ------------------------------------------------------------------------------
def test_envelope_and_version(client):
    response = client.get("/api/v1/system/version")
    body = response.json()
    assert response.status_code == 200 and body["success"] is True and body["meta"] == {}
    assert body["data"]["api_version"] == "v1"
    assert response.headers["X-API-Version"] == "v1"
    health = httpx.get(f"{client.base_url}/api/v1/system/health").json()  # no key needed
    assert health["success"] and health["data"]["status"] == "ok"


def test_framework_errors_use_the_envelope(client):
    error = _error(client.get("/api/v1/no-such-thing"), 404, "RESOURCE_NOT_FOUND")
    assert "no-such-thing" in error["message"]
    _error(client.put("/api/v1/tasks"), 405, "METHOD_NOT_ALLOWED")
    error = _error(client.get("/api/v1/tasks", params={"limit": 101}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "limit"
    error = _error(client.post("/api/v1/jobs/submit", content=b"{not json",
                               headers={"Content-Type": "application/json"}),
                   422, "VALIDATION_ERROR")
    assert error["details"]["field"]
    _error(client.get("/api/v1/tasks/r_nope"), 404, "RESOURCE_NOT_FOUND")
    # The MNIST MLP API under /api keeps its own documented error shape.
    legacy = client.get("/api/runs/r_nope")
    assert legacy.status_code == 404 and "detail" in legacy.json() and "success" not in legacy.json()


def test_missing_or_bad_key_is_auth_invalid(client):
    anonymous = httpx.get(f"{client.base_url}/api/v1/tasks")
    _error(anonymous, 401, "AUTH_INVALID")
    assert "X-RateLimit-Limit" in anonymous.headers  # every response carries the headers
    bad = httpx.get(f"{client.base_url}/api/v1/tasks", headers={"Authorization": "Bearer nope"})
    _error(bad, 401, "AUTH_INVALID")


def test_submit_validation_names_the_field(client):
    body = {"neural_model_config": {"input_dim": 784, "hidden_dims": [32], "output_dim": 10},
            "global_node_urls": ["ws://node1.example:8765", "ftp://nowhere"]}
    error = _error(client.post("/api/v1/jobs/submit", json=body), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "global_node_urls[1]"
    body = {"neural_model_config": {"input_dim": 784, "hidden_dims": [32], "output_dim": 10},
            "training_config": {"batch_size": 0}}
    error = _error(client.post("/api/v1/jobs/submit", json=body), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "training_config.batch_size"
    body = {"neural_model_config": {"input_dim": 784, "hidden_dims": [65536, 65536],
                                    "output_dim": 10}}
    error = _error(client.post("/api/v1/jobs/submit", json=body), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "neural_model_config"


# ---- jobs -------------------------------------------------------------------------------------
def test_job_status_and_results(client, finished_jobs):
    job = finished_jobs[0]
    status = client.get(f"/api/v1/jobs/{job['job_id']}/status").json()["data"]
    assert status["status"] == "completed" and status["metrics"]["epoch"] == 1
    results = client.get(f"/api/v1/jobs/{job['job_id']}/results").json()["data"]
    assert results["training_duration"] > 0
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert isinstance(results["final_metrics"][name], float)
    config = client.get(results["model_artifacts"]["config_url"])
    assert config.status_code == 200 and config.json()["architecture"]["input_size"] == 784


def test_results_of_an_unfinished_job_conflict(client):
    job = submit_job(client, epochs=1000, limit=1000)  # long enough to be cancelled running
    try:
        _error(client.get(f"/api/v1/jobs/{job['job_id']}/results"), 409, "CONFLICT")
    finally:
        cancelled = client.delete(f"/api/v1/tasks/{job['task_id']}")
        assert cancelled.status_code == 200, cancelled.text
    assert wait_job(client, job["job_id"])["status"] == "cancelled"
    _error(client.delete(f"/api/v1/tasks/{job['task_id']}"), 409, "CONFLICT")


# ---- tasks: pagination, filtering, sorting, fields ----------------------------------------------
def test_tasks_pagination(client, finished_jobs):
    total = client.get("/api/v1/tasks").json()["meta"]["pagination"]["total"]
    assert total >= 3
    first = client.get("/api/v1/tasks", params={"limit": 2, "page": 1}).json()
    assert first["meta"]["pagination"] == {"total": total, "page": 1, "limit": 2,
                                           "pages": (total + 1) // 2}
    assert len(first["data"]["tasks"]) == 2
    pages = [first["data"]["tasks"]]
    for page in range(2, first["meta"]["pagination"]["pages"] + 1):
        pages.append(client.get("/api/v1/tasks", params={"limit": 2, "page": page}).json()["data"][
            "tasks"])
    ids = [t["id"] for p in pages for t in p]
    assert len(ids) == total == len(set(ids))
    beyond = client.get("/api/v1/tasks", params={"limit": 2, "page": 1000}).json()
    assert beyond["data"] == {"tasks": [], "total": total} and beyond["meta"]["pagination"]["total"] == total


def test_tasks_filter_sort_and_fields(client, finished_jobs):
    ids = {j["task_id"] for j in finished_jobs}
    done = client.get("/api/v1/tasks", params={"status": "completed", "limit": 100}).json()
    assert ids <= {t["id"] for t in done["data"]["tasks"]}
    assert all(t["status"] == "completed" for t in done["data"]["tasks"])
    by_model = client.get("/api/v1/tasks", params={"model": finished_jobs[1]["model_id"]}).json()
    assert [t["id"] for t in by_model["data"]["tasks"]] == [finished_jobs[1]["task_id"]]

    asc = client.get("/api/v1/tasks", params={"sort": "createdAt:asc", "limit": 100}).json()
    desc = client.get("/api/v1/tasks", params={"sort": "createdAt:desc", "limit": 100}).json()
    assert [t["id"] for t in asc["data"]["tasks"]] == [t["id"] for t in reversed(desc["data"]["tasks"])]
    created = [t["created_at"] for t in asc["data"]["tasks"]]
    assert created == sorted(created)

    slim = client.get("/api/v1/tasks", params={"fields": "id,status", "status": "completed"})
    assert all(set(t) == {"id", "status"} for t in slim.json()["data"]["tasks"])

    error = _error(client.get("/api/v1/tasks", params={"fields": "id,secret"}), 422,
                   "VALIDATION_ERROR")
    assert error["details"]["field"] == "fields" and "secret" in error["message"]
    error = _error(client.get("/api/v1/tasks", params={"sort": "password:asc"}), 422,
                   "VALIDATION_ERROR")
    assert error["details"]["field"] == "sort"
    error = _error(client.get("/api/v1/tasks", params={"status": "exploded"}), 422,
                   "VALIDATION_ERROR")
    assert error["details"]["field"] == "status"
    error = _error(client.get("/api/v1/tasks", params={"colour": "red"}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "colour"


def test_task_by_task_or_job_id(client, finished_jobs):
    job = finished_jobs[2]
    by_task = client.get(f"/api/v1/tasks/{job['task_id']}").json()["data"]
    by_job = client.get(f"/api/v1/tasks/{job['job_id']}").json()["data"]
    assert by_task == by_job and by_task["type"] == "training" and by_task["model"] == job["model_id"]


# ---- analytics ----------------------------------------------------------------------------------
def test_analytics(client, finished_jobs):
    stats = client.get("/api/v1/analytics/stats").json()["data"]
    assert stats["total_tasks"] >= 3 and stats["total_compute_hours"] > 0
    perf = client.get("/api/v1/analytics/performance",
                      params={"timeframe": "1h", "metric": "val_accuracy"}).json()["data"]
    assert {p["task_id"] for p in perf["points"]} >= {j["task_id"] for j in finished_jobs}
    _error(client.get("/api/v1/analytics/performance", params={"timeframe": "2y"}), 422,
           "VALIDATION_ERROR")
    usage = client.get("/api/v1/analytics/usage").json()["data"]["keys"]
    mine = [row for row in usage if row["name"] == "bootstrap-admin"]
    assert mine and mine[0]["tasks_completed"] >= 3
    # 300 limited samples, 20% held out -> 240 training samples per one-epoch job.
    assert mine[0]["samples"] >= 3 * 240 and mine[0]["tflop"] > 0 and mine[0]["compute_seconds"] > 0


def test_explorer_is_served_offline(client):
    page = client.get("/api/explorer")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "cdn" not in page.text.lower() and "/api/openapi.json" in page.text
    schema = client.get("/api/openapi.json").json()
    assert "/api/v1/jobs/submit" in schema["paths"] and "/api/models" in schema["paths"]


# ---- keys: lifecycle, scopes, expiry, revocation, rate limits ----------------------------------
def _wait_for_fresh_window(response: httpx.Response, margin: float = 15.0) -> None:
    """Sleep into the next one-minute window if this one ends within ``margin`` seconds, so a
    count of requests cannot straddle a reset."""
    left = int(response.headers["X-RateLimit-Reset"]) - time.time()
    if left < margin:
        time.sleep(max(0.0, left) + 0.5)


def test_key_lifecycle_scopes_expiry_revocation_and_rate_limit(server_factory):
    server = server_factory(extra_env={"WORKBENCH_RATE_LIMIT_PER_MINUTE": "25"})
    admin = server.http()
    url = server.url

    def as_key(key: str) -> httpx.Client:
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    created = admin.post("/api/v1/auth/keys", json={"name": "reader", "permissions": ["read"]})
    assert created.status_code == 201, created.text
    reader_key = created.json()["data"]["key"]
    reader_id = created.json()["data"]["key_id"]
    trainer = admin.post("/api/v1/auth/keys", json={"name": "trainer", "permissions": ["train"]})
    trainer_key = trainer.json()["data"]["key"]
    expiring = admin.post("/api/v1/auth/keys", json={"name": "brief", "permissions": ["read"],
                                                     "expires_in_seconds": 2})
    expiring_key = expiring.json()["data"]["key"]
    started = time.time()

    listed = admin.get("/api/v1/auth/keys").json()["data"]
    assert {k["name"] for k in listed} >= {"reader", "trainer", "brief", "bootstrap-admin"}
    assert all("key" not in k and "hash" not in k for k in listed)  # shown once, never again

    # Scopes: read may read, not train; train may not manage keys.
    with as_key(reader_key) as reader:
        assert reader.get("/api/v1/tasks").status_code == 200
        body = {"neural_model_config": {"input_dim": 784, "output_dim": 10}}
        _error(reader.post("/api/v1/jobs/submit", json=body), 403, "FORBIDDEN")
    with as_key(trainer_key) as t:
        _error(t.post("/api/v1/auth/keys", json={"name": "x"}), 403, "FORBIDDEN")
        assert t.get("/api/v1/tasks").status_code == 200

    # Expiry: 401 AUTH_INVALID once the expiry passed.
    time.sleep(max(0.0, started + 2.5 - time.time()))
    with as_key(expiring_key) as brief:
        error = _error(brief.get("/api/v1/tasks"), 401, "AUTH_INVALID")
    assert "expired" in error["message"]

    # Rate limit: 25 a minute for this key, then 429 with the headers and Retry-After.
    with as_key(trainer_key) as t:
        probe = t.get("/api/v1/system/version")
        _wait_for_fresh_window(probe)
        remaining = []
        for _ in range(30):
            response = t.get("/api/v1/system/version")
            if response.status_code == 429:
                break
            remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        error = _error(response, 429, "RATE_LIMIT_EXCEEDED")
        assert response.headers["X-RateLimit-Limit"] == "25"
        assert response.headers["X-RateLimit-Remaining"] == "0"
        assert int(response.headers["Retry-After"]) >= 1
        assert int(response.headers["X-RateLimit-Reset"]) > time.time() - 1
        assert remaining == sorted(remaining, reverse=True) and remaining[-1] == 0
        assert error["details"]["limit"] == 25
    # Other keys have their own budget.
    assert admin.get("/api/v1/system/version").status_code == 200

    # Revocation: 401 from then on; listed as revoked.
    revoked = admin.delete(f"/api/v1/auth/keys/{reader_id}")
    assert revoked.status_code == 200 and revoked.json()["data"]["status"] == "revoked"
    with as_key(reader_key) as reader:
        error = _error(reader.get("/api/v1/tasks"), 401, "AUTH_INVALID")
    assert "revoked" in error["message"]
    _error(admin.delete("/api/v1/auth/keys/key_nope"), 404, "RESOURCE_NOT_FOUND")
    admin.close()

    # Only hashes reach DuckDB: stop the server (it owns the file) and look.
    server.stop()
    with duckdb.connect(str(server.home / "workbench.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT * FROM api_keys").fetchall()
        hashes = {r[2] for r in rows}
    secret = (server.home / "secret.key").read_text().strip().encode()  # keyed: HMAC-SHA256
    for key in (reader_key, trainer_key, expiring_key):
        keyed = hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()
        assert "hmac-sha256$" + keyed in hashes
        assert hashlib.sha256(key.encode()).hexdigest() not in hashes
        assert not any(key in str(value) for row in rows for value in row)


@needs_chromium
def test_explorer_lists_operations_and_sends_requests_in_chromium(live_server):
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.new_page()
        errors = watch(page)
        page.goto(live_server.url + "/api/explorer")
        page.wait_for_selector("details", timeout=30_000)
        assert page.locator("details").count() > 20 and errors == []
        page.fill("#key", live_server.token)
        page.dispatch_event("#key", "change")
        operation = page.locator("details", has_text="/api/v1/tasks/{task_id}").first
        operation.locator("summary").click()
        operation.locator("input[name=task_id]").fill("r_missing")
        operation.locator("button").click()
        output = operation.locator("pre")
        expect(output).to_contain_text("RESOURCE_NOT_FOUND", timeout=10_000)
        assert output.text_content().startswith("404")
