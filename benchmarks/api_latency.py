"""REST latency and throughput of a real ``workbench serve`` on loopback, in one run.

    python benchmarks/api_latency.py [--requests 300] [--seconds 5] [--clients 32]

Starts a server (fresh WORKBENCH_HOME, offline), trains a 784-128-64-10 model, then measures:
- ``POST /api/infer`` p50/p99 client-side latency at batch 1 and 512, JSON and binary float32
  bodies (sequential, keep-alive); ``ratio`` = p50 / the target; ``service_p50_ms`` is the
  server's own ``latency_ms`` (model lookup, input check, forward);
- the same JSON body parsed by stdlib ``json.loads`` + numpy in-process: the baseline the
  pydantic parse path avoids (``ratio`` = stdlib parse time / server p50);
- ``GET /api/health`` (no auth, no store) latency and requests/s: the floor of framework,
  client and loopback on this machine at this moment;
- ``GET /api/runs/{id}`` requests/s with N concurrent keep-alive clients (raw asyncio HTTP/1.1
  client: cheap, so the load generator does not hide the server) while a training run is going,
  and idle; ``ratio`` = training req/s / target.

Prints one JSON line per measurement. The machine's cores are shared by the server, the
training worker and this load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.utils.server import LiveServer, start_server  # noqa: E402

TARGETS = {"infer_p50_ms_b1": 2.0, "infer_p50_ms_b512_json": 50.0, "status_rps": 2000.0}
ARCH = {"input_size": 784, "layers": [
    {"type": "linear", "in": 784, "out": 128}, {"type": "relu"},
    {"type": "linear", "in": 128, "out": 64}, {"type": "relu"},
    {"type": "linear", "in": 64, "out": 10}]}


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.array(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def wait_state(http: httpx.Client, run_id: str, states: set[str], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = http.get(f"/api/runs/{run_id}").json()
        if run["state"] in states:
            return run
        time.sleep(0.2)
    raise RuntimeError(f"run {run_id} stuck: {run}")


def bench_floor(http: httpx.Client, n_requests: int) -> float:
    """p50 of GET /api/health: the framework + client + loopback floor of this machine now."""
    for _ in range(5):
        http.get("/api/health")
    times = []
    for _ in range(n_requests):
        t0 = time.perf_counter()
        http.get("/api/health")
        times.append(time.perf_counter() - t0)
    p50, p99 = percentiles(times)
    emit(case="baseline_health_floor", requests=n_requests, p50_ms=round(p50, 3),
         p99_ms=round(p99, 3))
    return p50


def bench_infer(http: httpx.Client, param_id: str, x: np.ndarray, n_requests: int) -> None:
    for batch in (1, 512):
        rows = x[:batch]
        json_body = json.dumps({"param_id": param_id, "inputs": rows.tolist()}).encode()
        binary_body = rows.astype("<f4").tobytes()
        cases = {
            "json": dict(content=json_body, headers={"Content-Type": "application/json"}),
            "binary": dict(content=binary_body, params={"param_id": param_id,
                                                       "shape": f"{batch},784"},
                           headers={"Content-Type": "application/octet-stream"}),
        }
        count = n_requests if batch == 1 else max(20, n_requests // 5)
        for kind, kwargs in cases.items():
            for _ in range(5):  # warm-up (model cache, connections)
                assert http.post("/api/infer", **kwargs).status_code == 200
            times, served = [], []
            for _ in range(count):
                t0 = time.perf_counter()
                r = http.post("/api/infer", **kwargs)
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                served.append(r.json()["latency_ms"])
            p50, p99 = percentiles(times)
            target = TARGETS["infer_p50_ms_b1"] if batch == 1 else (
                TARGETS["infer_p50_ms_b512_json"] if kind == "json" else None)
            emit(case=f"infer_{kind}_batch{batch}", requests=count, body_bytes=len(
                kwargs["content"]), p50_ms=round(p50, 3), p99_ms=round(p99, 3),
                service_p50_ms=round(float(np.median(served)), 3),
                target_p50_ms=target, ratio=round(p50 / target, 3) if target else None)
            if kind == "json" and batch == 512:
                t0 = time.perf_counter()
                for _ in range(5):
                    np.asarray(json.loads(json_body)["inputs"], dtype=np.float32)
                stdlib_ms = (time.perf_counter() - t0) / 5 * 1000
                emit(case="baseline_stdlib_json_parse_batch512", parse_ms=round(stdlib_ms, 3),
                     server_p50_ms=round(p50, 3), ratio=round(stdlib_ms / p50, 3))


async def _status_load(port: int, path: str, token: str, clients: int, seconds: float) -> int:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    deadline = time.monotonic() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return done


def bench_status(server: LiveServer, path: str, clients: int, seconds: float, label: str,
                 training: bool) -> None:
    t0 = time.perf_counter()
    count = asyncio.run(_status_load(server.port, path, server.token, clients, seconds))
    rps = count / (time.perf_counter() - t0)
    emit(case=f"status_rps_{label}", clients=clients, requests=count, req_per_s=round(rps, 1),
         training_running=training, target_req_per_s=TARGETS["status_rps"],
         ratio=round(rps / TARGETS["status_rps"], 3))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="sequential requests at batch 1")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each status load")
    ap.add_argument("--clients", type=int, default=32)
    args = ap.parse_args()

    from workbench.data import load_splits

    x = load_splits("mnist", offline=True, progress=False).x_test.numpy()
    server = start_server(Path(tempfile.mkdtemp(prefix="wb-bench-")), workers=1)
    try:
        with server.http() as http:
            model = http.post("/api/models", json={"architecture": ARCH, "hyperparams": {
                "epochs": 1, "optimizer": {"type": "adam", "lr": 1e-3}}}).json()
            run = http.post(f"/api/models/{model['model_id']}/train", json={"limit": 2000}).json()
            run = wait_state(http, run["run_id"], {"succeeded"})
            bench_floor(http, args.requests)
            bench_infer(http, run["param_id"], x, args.requests)
            bench_status(server, "/api/health", args.clients, args.seconds, "health_floor", False)
            bench_status(server, f"/api/runs/{run['run_id']}", args.clients, args.seconds, "idle",
                         False)
            live = http.post(f"/api/models/{model['model_id']}/train", json={
                "hyperparams": {"epochs": 1000, "batch_size": 32}}).json()
            wait_state(http, live["run_id"], {"running"})
            time.sleep(1.0)  # let the worker get into its training loop
            bench_status(server, f"/api/runs/{live['run_id']}", args.clients, args.seconds,
                         "while_training", True)
            still = http.get(f"/api/runs/{live['run_id']}").json()
            if still["state"] != "running":
                raise RuntimeError(f"the training run ended during the load: {still}")
            http.post(f"/api/runs/{live['run_id']}/cancel")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
