"""The five API documents (``shared/seeds/``), item by item, against a real ``workbench serve``:
each test quotes the line of the document it checks."""

from __future__ import annotations

import httpx
import pytest

from tests.utils.v1 import submit_job, wait_job

TRAINER_JOB = {"model_config": {"layer_sizes": [784, 16, 10]},
               "dataset_config": {"name": "MNIST", "batch_size": 64}}
ARCH = {"input_size": 784, "layers": [{"type": "linear", "in": 784, "out": 10}]}


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    return body["error"]


# ---- neurogrid-api.md ---------------------------------------------------------------------------
def test_nodes_list_has_the_documented_shape(client):
    """neurogrid: ``"data": {"nodes": [...], "total": 150, "limit": 50, "offset": 0}`` and
    "``limit`` | integer | Number of results (default: 50, max: 100)"."""
    body = client.get("/api/v1/nodes").json()
    assert body["data"] == {"nodes": [], "total": 0, "limit": 50, "offset": 0}
    assert client.get("/api/v1/nodes", params={"limit": 7, "offset": 3}).json()["data"] == {
        "nodes": [], "total": 0, "limit": 7, "offset": 3}
    _error(client.get("/api/v1/nodes", params={"limit": 101}), 422, "VALIDATION_ERROR")


def test_tasks_list_has_the_documented_shape_and_cost(client, trained):
    """neurogrid: ``"data": {"tasks": [{... "cost": 0.0155, "node_id": "node_123"}],
    "total": 25}``."""
    data = client.get("/api/v1/tasks").json()["data"]
    assert set(data) == {"tasks", "total"} and data["total"] == len(data["tasks"]) >= 1
    task = next(t for t in data["tasks"] if t["job_id"] == trained["job_id"])
    # cost = compute hours x WORKBENCH_COMPUTE_PRICE_PER_HOUR, which defaults to 0
    assert task["cost"] == 0.0 and task["node_id"] == "local"


def test_models_list_with_type_and_category_filters(client, trained):
    """neurogrid: ``GET /models`` "Get a list of all available AI models", parameters
    ``type`` "Model type (`text`, `image`, `audio`)" and ``category``."""
    models = client.get("/api/v1/models").json()["data"]["models"]
    mine = next(m for m in models if m["id"] == trained["model_id"])
    assert mine["type"] == "image" and mine["category"] == "classification"
    assert mine["parameters"]["count"] == 784 * 32 + 32 + 32 * 10 + 10
    assert mine["pricing"]["currency"] == "USD"
    assert client.get("/api/v1/models", params={"type": "text"}).json()["data"]["models"] == []
    assert client.get("/api/v1/models", params={"type": "image",
                                                "category": "classification"}).json()[
        "data"]["models"]
    assert client.get("/api/v1/models", params={"category": "generation"}).json()[
        "data"]["models"] == []
    _error(client.get("/api/v1/models", params={"type": "video"}), 422, "VALIDATION_ERROR")


def test_error_bodies_carry_the_documented_type(client):
    """neurogrid: ``"error": {"code": "ERROR_CODE", "message": ..., "type": "ErrorType",
    "details": {...}}``; its ``NOT_FOUND`` is our ``RESOURCE_NOT_FOUND`` (ERROR_CODES)."""
    error = _error(client.get("/api/v1/tasks/r_nope"), 404, "RESOURCE_NOT_FOUND")
    assert error["type"] == "NotFoundError"
    error = _error(client.get("/api/v1/tasks", params={"colour": "red"}), 422,
                   "VALIDATION_ERROR")
    assert error["type"] == "ValidationError"
    anonymous = httpx.get(f"{client.base_url}/api/v1/tasks").json()["error"]
    assert anonymous["code"] == "AUTH_INVALID" and anonymous["type"] == "AuthenticationError"


# ---- cortex-api-conventions.md -----------------------------------------------------------------
def test_fields_keep_the_requested_names(client, trained):
    """conventions: ``GET /api/plugin-core/jobs?fields=id,status,createdAt`` "Request only
    specific fields"."""
    tasks = client.get("/api/v1/tasks", params={"fields": "id,status,createdAt"}).json()[
        "data"]["tasks"]
    assert tasks and all(list(t) == ["id", "status", "createdAt"] for t in tasks)
    assert all(t["createdAt"] for t in tasks)


def test_413_and_405_are_enveloped(live_server, client):
    """conventions: "For errors: ``{"success": false, "error": {"code": "ERROR_CODE", ...}}``"
    (v1), and the trainer document: "All endpoints may return error responses in the following
    format: ``{"error": "Error message description"}``"."""
    big = b"[" + b"0," * (33 * 1024 * 1024 // 2) + b"0]"
    error = _error(client.post("/api/v1/jobs/submit", content=big,
                               headers={"Content-Type": "application/json"}), 413,
                   "VALIDATION_ERROR")
    assert error["details"]["field"] == "body"
    _error(client.put("/api/v1/tasks"), 405, "METHOD_NOT_ALLOWED")
    trainer_405 = client.put("/api/previous_teraflops")
    assert trainer_405.status_code == 405 and set(trainer_405.json()) == {"error"}
    trainer_413 = client.post("/api/jobs", content=big, headers={"Content-Type":
                                                                  "application/json"})
    assert trainer_413.status_code == 413 and set(trainer_413.json()) == {"error"}
    # The MNIST MLP API keeps its own shape.
    assert "detail" in client.post("/api/models", content=big, headers={
        "Content-Type": "application/json"}).json()


# ---- cortex-jobs-api.md -------------------------------------------------------------------------
def test_finetune_ids(client, trained):
    """jobs: ``"finetune_job_id": "finetune_123456"``."""
    response = client.post(f"/api/v1/models/{trained['job_id']}/finetune", json={
        "fine_tuning_config": {"epochs": 1}, "dataset_config": {"limit": 200}})
    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["finetune_job_id"].startswith("finetune_")
    assert data["original_job_id"] == trained["job_id"]
    status = wait_job(client, data["finetune_job_id"])  # the fine-tune id is a job id too
    assert status["status"] == "completed"


def test_the_documents_own_examples_say_what_is_supported(client, trained):
    """jobs: ``"dataset_url": "s3://cortex-data/fine-tuning/dataset1"`` and
    ``"global_node_urls": ["ws://node1.thecortex.xyz", ...]``: 422s that say what works."""
    error = _error(client.post(f"/api/v1/models/{trained['job_id']}/finetune", json={
        "dataset_config": {"dataset_url": "s3://cortex-data/fine-tuning/dataset1"}}), 422,
        "VALIDATION_ERROR")
    assert error["details"]["field"] == "dataset_config.dataset_url"
    assert "file://" in error["message"] and "https://" in error["message"]
    error = _error(client.post("/api/v1/jobs/submit", json={
        "neural_model_config": {"input_dim": 784, "hidden_dims": [16], "output_dim": 10},
        "global_node_urls": ["ws://node1.thecortex.xyz", "ws://node2.thecortex.xyz"]}), 422,
        "VALIDATION_ERROR")
    assert error["details"]["field"] == "global_node_urls[0]"
    assert "registered node" in error["message"] and "http://host:port" in error["message"]


# ---- distributed-trainer-api.md -----------------------------------------------------------------
def test_trainer_list_shows_active_jobs(client):
    """trainer: "### List Jobs  Retrieves all active jobs"."""
    job_id = client.post("/api/jobs", json=TRAINER_JOB).json()["job_id"]
    assert job_id in [j["job_id"] for j in client.get("/api/jobs").json()["jobs"]]
    assert job_id in [j["job_id"] for j in client.get("/api/jobs", params={
        "finished": "true"}).json()["jobs"]]


@pytest.mark.parametrize("ip", ["", "not an address", "1.2.3", "300.1.1.1", "host/../x",
                                " 127.0.0.1"])
def test_trainer_ip_is_validated(client, ip):
    """trainer: ``"ip": "192.168.1.100"`` — a device's ip is an IP address or host name (422
    naming ``ip``, as the security tests fix it; other bad parameters are the document's 400)."""
    job_id = client.post("/api/jobs", json=TRAINER_JOB).json()["job_id"]
    response = client.post("/api/devices/register", json={"ip": ip, "port": 5001,
                                                          "job_id": job_id})
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error"} and response.json()["error"].startswith("ip")


# ---- mnist-mlp-api.md ---------------------------------------------------------------------------
def test_inconsistent_overrides_are_409(client):
    """mnist: "409 inconsistent hyperparameters for an existing run"."""
    model = client.post("/api/models", json={"architecture": ARCH, "hyperparams": {
        "epochs": 5, "max_epochs": 5, "early_stopping_patience": 2}}).json()
    for override, why in (({"epochs": 9}, "max_epochs"),
                          ({"train_split": 1.0}, "validation data"),
                          ({"epochs": 2}, "could never stop")):
        response = client.post(f"/api/models/{model['model_id']}/train",
                               json={"hyperparams": override})
        assert response.status_code == 409, response.text
        assert why in " ".join(response.json()["errors"])


def test_booleans_are_not_inference_inputs(client, trained):
    """mnist: ``"inputs": [[...784 floats...], ...]`` and "422 on invalid input shape"."""
    param_id = client.get(f"/api/v1/jobs/{trained['job_id']}/results").json()["data"][
        "param_id"]
    row = [0.0] * 783 + [True]
    response = client.post("/api/infer", json={"param_id": param_id, "inputs": [row]})
    assert response.status_code == 422 and "inputs[0][783]" in response.text
    adhoc = client.post("/api/infer_adhoc", json={
        "architecture": ARCH, "inputs": [[False] * 784],
        "parameters": {"layers": [{"type": "linear", "W": [[0.0] * 784] * 10,
                                   "b": [0.0] * 10}]}})
    assert adhoc.status_code == 422, adhoc.text
    assert client.post("/api/infer", json={"param_id": param_id,
                                           "inputs": [[0, 1.5] + [0.0] * 782]}).status_code == 200


def test_jobs_submitted_here_are_listed(client):
    """(fixture sanity: submit_job works on this server)"""
    job = submit_job(client, limit=100)
    assert job["job_id"].startswith("job_")


# ---- rate limits (cortex-api-conventions.md) ----------------------------------------------------
def _key(client: httpx.Client, **body) -> tuple[str, dict]:
    made = client.post("/api/v1/auth/keys", json={"name": "rate", "permissions": ["train"],
                                                  **body})
    assert made.status_code == 201, made.text
    return made.json()["data"]["key"], made.json()["data"]


def _as(client: httpx.Client, key: str) -> httpx.Client:
    return httpx.Client(base_url=str(client.base_url), timeout=60,
                        headers={"Authorization": f"Bearer {key}"})


def _fresh_window(response: httpx.Response, margin: float = 10.0) -> None:
    """Sleep into the next minute window if this one ends within ``margin`` s (so a count of
    requests cannot straddle a reset)."""
    import time

    left = int(response.headers["X-RateLimit-Reset"]) - time.time()
    if left < margin:
        time.sleep(max(0.0, left) + 0.5)


def test_rate_limit_headers_on_every_family(client):
    """conventions: "Rate limit headers are included in all responses: X-RateLimit-Limit: 60,
    X-RateLimit-Remaining: 58, X-RateLimit-Reset: 1625097600"."""
    key, view = _key(client)
    assert (view["rate_limit_tier"], view["rate_limit_per_minute"]) == ("free", 60)
    with _as(client, key) as free:
        responses = [free.get("/api/v1/tasks"), free.get("/api/runs"), free.get("/api/jobs"),
                     free.get("/api/models/m_nope"), free.put("/api/v1/tasks"),
                     free.get("/api/health")]
        big = b"[" + b"0," * (33 * 1024 * 1024 // 2) + b"0]"
        responses.append(free.post("/api/v1/jobs/submit", content=big,
                                   headers={"Content-Type": "application/json"}))
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 405, 200, 413]
    for response in responses:
        assert response.headers["X-RateLimit-Limit"] == "60", response.request.url
        assert 0 <= int(response.headers["X-RateLimit-Remaining"]) < 60
        assert int(response.headers["X-RateLimit-Reset"]) % 60 == 0
    # The server's own credential (what the CLI, notebooks and the app use) is on the owner
    # tier: effectively unlimited.
    assert int(client.get("/api/runs").headers["X-RateLimit-Limit"]) >= 1_000_000
    # Requests without a valid key count per client address (the anonymous tier).
    anonymous = httpx.get(f"{client.base_url}/api/runs")
    assert anonymous.status_code == 401 and anonymous.headers["X-RateLimit-Limit"] == "600"


def test_free_tier_is_60_per_minute_and_keys_have_their_own(client):
    """conventions: "| Free | 60 requests per minute |", "| Pro | 300 requests per minute |",
    "| Enterprise | Custom limits |" — per key, the default tier Free."""
    key, _ = _key(client)
    with _as(client, key) as free:
        _fresh_window(free.get("/api/health"))
        codes = [free.get("/api/health").status_code for _ in range(70)]
        assert codes.count(429) >= 9 and codes[:58].count(429) == 0, codes  # 1 spent above
        refused = free.get("/api/runs")
        assert refused.status_code == 429 and "rate limit" in refused.json()["errors"][0]
        assert int(refused.headers["Retry-After"]) >= 1
        trainer = free.get("/api/jobs")
        assert trainer.status_code == 429 and set(trainer.json()) == {"error"}
        assert free.get("/api/v1/tasks").json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    # Another key has its own budget; a custom limit and a tier can be set per key.
    custom, view = _key(client, rate_limit_per_minute=3)
    assert view["rate_limit_per_minute"] == 3
    with _as(client, custom) as c:
        _fresh_window(c.get("/api/health"))
        assert [c.get("/api/health").status_code for _ in range(3)] == [200, 200, 429]
    key_id = view["key_id"]
    pro = client.patch(f"/api/v1/auth/keys/{key_id}", json={"rate_limit_tier": "pro"})
    assert pro.json()["data"]["rate_limit_per_minute"] == 300, pro.text
    with _as(client, custom) as c:
        assert c.get("/api/health").headers["X-RateLimit-Limit"] == "300"
    _error(client.patch(f"/api/v1/auth/keys/{key_id}", json={"rate_limit_tier": "gold"}), 422,
           "VALIDATION_ERROR")


# ---- the websocket at /ws (neurogrid-api.md, cortex-api-conventions.md) -------------------------
def test_the_documents_websocket_is_at_ws(live_server):
    """conventions: "const socket = new WebSocket('wss://your-cortex-instance.com/ws');" then
    ``socket.send(JSON.stringify({type: 'auth', token: 'YOUR_API_KEY'}))`` and
    ``{type: 'subscribe', channel: 'jobs'}``."""
    import json

    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{live_server.port}/ws") as ws:
        ws.send(json.dumps({"type": "auth", "token": live_server.token}))
        assert json.loads(ws.recv(timeout=30))["type"] == "auth.ok"
        ws.send(json.dumps({"type": "subscribe", "channel": "jobs"}))
        assert json.loads(ws.recv(timeout=30)) == {"type": "subscribed", "channel": "jobs"}
    with connect(f"ws://127.0.0.1:{live_server.port}/ws") as ws:
        ws.send(json.dumps({"type": "auth", "token": "not-a-key"}))
        refused = json.loads(ws.recv(timeout=30))
        assert refused["error"]["code"] == "AUTH_INVALID"
        assert refused["error"]["type"] == "AuthenticationError"


# ---- deployments (cortex-jobs-api.md) -------------------------------------------------------------
def _wait_ready(client: httpx.Client, deployment_id: str, timeout: float = 60) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        view = client.get(f"/api/v1/deployments/{deployment_id}").json()["data"]
        if view["status"] != "deploying":
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.1)


def test_deploy_answers_deploying_then_ready_and_survives_a_restart(server_factory):
    """jobs: ``POST /models/{job_id}/deploy`` -> ``"deployment_id": "deploy_123456",
    "status": "deploying"``; then ready, and still there after the server restarts."""
    server = server_factory()
    with server.http() as client:
        job = submit_job(client, limit=300)
        assert wait_job(client, job["job_id"])["status"] == "completed"
        made = client.post(f"/api/v1/models/{job['job_id']}/deploy", json={})
        assert made.status_code == 201, made.text
        deployment = made.json()["data"]
        assert deployment["status"] == "deploying"
        assert deployment["deployment_id"].startswith("deploy_")
        assert _wait_ready(client, deployment["deployment_id"])["status"] == "ready"
    server.stop()
    again = server_factory(home=server.home)
    with again.http() as client:
        assert _wait_ready(client, deployment["deployment_id"])["status"] == "ready"
        predicted = client.post(f"/api/v1/deployments/{deployment['deployment_id']}/predict",
                                json={"inputs": [[0.0] * 784]})
        assert predicted.status_code == 200, predicted.text
        assert len(predicted.json()["data"]["outputs"]["labels"]) == 1
        assert client.delete(f"/api/v1/deployments/{deployment['deployment_id']}"
                             ).status_code == 200
    again.stop()
    third = server_factory(home=server.home)
    with third.http() as client:
        gone = client.get(f"/api/v1/deployments/{deployment['deployment_id']}")
        _error(gone, 404, "RESOURCE_NOT_FOUND")


# ---- the conventions' namespaces -----------------------------------------------------------------
def test_plugin_core_jobs_with_paging_filter_sort_fields(client, trained):
    """conventions: ``GET /api/plugin-core/jobs?page=2&limit=10``, ``?status=running&provider=
    akash``, ``?sort=createdAt:desc``, ``?fields=id,status,createdAt``."""
    for path in ("/api/plugin-core/jobs", "/api/v1/plugin-core/jobs", "/api/v1/jobs"):
        body = client.get(path, params={"limit": 1, "page": 1}).json()
        assert body["success"] and len(body["data"]) == 1, body
        assert set(body["meta"]["pagination"]) == {"total", "page", "limit", "pages"}
    done = client.get("/api/plugin-core/jobs", params={
        "status": "completed", "provider": "local", "sort": "createdAt:desc",
        "fields": "id,status,createdAt", "limit": 100}).json()["data"]
    assert trained["job_id"] in [j["id"] for j in done]
    assert all(list(j) == ["id", "status", "createdAt"] and j["status"] == "completed"
               for j in done)
    created = [j["createdAt"] for j in done]
    assert created == sorted(created, reverse=True)
    assert client.get("/api/plugin-core/jobs", params={"status": "running",
                                                       "provider": "akash"}).json()["data"] == []
    _error(client.get("/api/plugin-core/jobs", params={"status": "exploded"}), 422,
           "VALIDATION_ERROR")
    anonymous = httpx.get(f"{client.base_url}/api/plugin-core/jobs")
    _error(anonymous, 401, "AUTH_INVALID")


def test_plugin_core_providers_and_networks(client):
    """conventions: "| Providers | Provider configuration | `/api/plugin-core/providers` |" and
    "| Networks | Network status | `/api/plugin-core/networks` |"."""
    providers = client.get("/api/plugin-core/providers").json()["data"]
    assert {"local", "local-kernel", "distributed"} <= {p["id"] for p in providers}
    assert all(p["status"] for p in providers)
    job_id = client.post("/api/jobs", json=TRAINER_JOB).json()["job_id"]
    from tests.utils.server import free_port

    port = free_port()
    assert client.post("/api/devices/register", json={"ip": "127.0.0.1", "port": port,
                                                      "job_id": job_id}).status_code == 200
    members = client.get("/api/plugin-core/networks").json()["data"]
    worker = next(m for m in members if m["address"] == f"http://127.0.0.1:{port}")
    assert worker["type"] == "worker" and worker["job_id"] == job_id
    client.delete(f"/api/devices/{port}")


def test_webhooks_signed_retried_and_allowlisted(client):
    """conventions: "| Webhooks | Event notifications | `/api/plugin-core/webhooks` |" and "Use
    Webhooks: For event-driven architectures instead of polling"."""
    import hashlib
    import hmac
    import http.server
    import json
    import threading
    import time

    received: list[tuple[dict, bytes]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            # The first two attempts of each delivery fail: the third must come.
            tries = sum(1 for h, _ in received
                        if h["X-Webhook-Delivery"] == self.headers["X-Webhook-Delivery"])
            self.send_response(500 if tries < 3 else 204)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        refused = _error(client.post("/api/plugin-core/webhooks", json={
            "url": "http://10.0.0.5/hook"}), 422, "VALIDATION_ERROR")
        assert refused["details"]["field"] == "url" and "not allowed" in refused["message"]
        _error(client.post("/api/plugin-core/webhooks", json={"url": url, "events": ["boom"]}),
               422, "VALIDATION_ERROR")
        made = client.post("/api/plugin-core/webhooks", json={
            "url": url, "events": ["job.completed"]})
        assert made.status_code == 201, made.text
        hook = made.json()["data"]
        secret = hook["secret"]
        assert "secret" not in client.get(f"/api/plugin-core/webhooks/{hook['id']}").json()[
            "data"]

        job = submit_job(client, limit=100)
        assert wait_job(client, job["job_id"])["status"] == "completed"
        deadline = time.monotonic() + 60
        while True:
            deliveries = client.get(f"/api/plugin-core/webhooks/{hook['id']}/deliveries"
                                    ).json()["data"]
            mine = [d for d in deliveries if d["data"]["job_id"] == job["job_id"]]
            if mine and mine[0]["status"] != "pending":
                break
            assert time.monotonic() < deadline, deliveries
            time.sleep(0.2)
        assert mine[0]["status"] == "delivered" and mine[0]["attempts"] == 3
        assert mine[0]["event"] == "job.completed" and mine[0]["last_status"] == 204
        headers, body = received[-1]
        payload = json.loads(body)
        assert payload["type"] == "job.completed" and payload["data"]["status"] == "completed"
        expected = hmac.new(secret.encode(), headers["X-Webhook-Timestamp"].encode() + b"."
                            + body, hashlib.sha256).hexdigest()
        assert headers["X-Webhook-Signature"] == "sha256=" + expected
        assert client.delete(f"/api/plugin-core/webhooks/{hook['id']}").status_code == 200
        _error(client.get(f"/api/plugin-core/webhooks/{hook['id']}"), 404, "RESOURCE_NOT_FOUND")
    finally:
        httpd.shutdown()
        httpd.server_close()


# ---- usage, stats, cost (neurogrid-api.md) --------------------------------------------------------
def test_usage_stats_and_cost_from_compute_accounting(server_factory):
    """neurogrid: ``/analytics/usage`` -> ``"current_month": {"tasks_completed": 45,
    "total_cost": 12.50, "compute_time": "2h 15m", "tokens_generated": 25000}, "limits":
    {"monthly_tasks": 1000, "monthly_budget": 100.00}``; ``/analytics/stats`` ->
    ``"average_response_time": 3.2, "network_uptime": 99.8``; a task's ``"cost": 0.0155``."""
    server = server_factory(extra_env={"WORKBENCH_COMPUTE_PRICE_PER_HOUR": "36"})
    with server.http() as client:
        key, _ = _key(client)
        with _as(client, key) as mine:
            job = submit_job(mine, limit=300)
            assert wait_job(mine, job["job_id"])["status"] == "completed"
            task = mine.get(f"/api/v1/tasks/{job['task_id']}").json()["data"]
            # cost = compute hours (the run's duration) x WORKBENCH_COMPUTE_PRICE_PER_HOUR
            assert task["cost"] == pytest.approx(task["duration_s"] / 3600 * 36, abs=1e-5)
            assert task["cost"] > 0
            usage = mine.get("/api/v1/analytics/usage").json()["data"]
        month = usage["current_month"]
        assert month["tasks_completed"] == 1
        assert month["total_cost"] == pytest.approx(task["cost"], abs=1e-5)
        assert month["compute_time"] == "0h 0m" and month["tokens_generated"] == 0
        assert usage["limits"] == {"monthly_tasks": None, "monthly_budget": None}
        assert [k["tasks"] for k in usage["keys"]] == [1]  # per-key usage: only this key's
        # The admin sees everybody's month (here the same single task).
        assert client.get("/api/v1/analytics/usage").json()["data"]["current_month"][
            "tasks_completed"] == 1
        stats = client.get("/api/v1/analytics/stats").json()["data"]
        assert stats["network_uptime"] == 100.0  # local targets only, all available
        assert stats["average_response_time"] is None  # no deployment has answered yet
