"""Run status under training load (issue 21): a real ``workbench serve`` on loopback, in one run.

    python benchmarks/status_under_load.py [--seconds 4]

Measures, each over ``--seconds``:
- ``GET /api/runs/{id}`` req/s with 32 keep-alive clients on an idle server (a finished run)
  and while a run trains; ``ratio`` = training / idle (goal >= 0.5; >= 2,000 req/s on 2 cores);
- p50/p99/max latency with 100 clients while the run trains (goal p99 <= 50 ms);
- the training run's epochs/s with no status load and under the 100-client load; ``ratio`` =
  loaded / unloaded (goal >= 0.8).

Each for training workers at every ``--worker-nice`` (default 0 and 10: whether a lower
priority for training serves both better). Prints one JSON line per measurement. Server, training worker and load generator share the
machine's cores (that sharing is what is measured).
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
from benchmarks.api_latency import ARCH, wait_state  # noqa: E402
from tests.utils.server import start_server  # noqa: E402


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


async def _load(port: int, path: str, token: str, clients: int, seconds: float) -> list[float]:
    """Latencies (s) of every request ``clients`` keep-alive connections made in ``seconds``."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode()
    deadline = time.monotonic() + seconds
    latencies: list[float] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def load(server, path: str, clients: int, seconds: float) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    latencies = asyncio.run(_load(server.port, path, server.token, clients, seconds))
    return len(latencies) / (time.perf_counter() - t0), latencies


def epochs_per_s(http: httpx.Client, run_id: str, during) -> float:
    """Epochs the run finished while ``during()`` ran, per second."""
    first = http.get(f"/api/runs/{run_id}").json()["epoch"]
    t0 = time.perf_counter()
    during()
    last = http.get(f"/api/runs/{run_id}").json()["epoch"]
    return (last - first) / (time.perf_counter() - t0)


def measure(seconds: float, worker_nice: int) -> dict:
    """One server whose training worker runs at ``worker_nice``: every figure of the docstring."""
    server = start_server(Path(tempfile.mkdtemp(prefix="wb-bench-")), workers=1,
                          extra_env={"WORKBENCH_WORKER_NICE": str(worker_nice)})
    try:
        with server.http() as http:
            model = http.post("/api/models", json={"architecture": ARCH, "hyperparams": {
                "epochs": 1, "optimizer": {"type": "adam", "lr": 1e-3}}}).json()
            done = http.post(f"/api/models/{model['model_id']}/train", json={"limit": 500}).json()
            done = wait_state(http, done["run_id"], {"succeeded"})
            idle_rps, _ = load(server, f"/api/runs/{done['run_id']}", 32, seconds)
            live = http.post(f"/api/models/{model['model_id']}/train", json={
                "limit": 2000, "hyperparams": {"epochs": 1000, "batch_size": 64}})
            live.raise_for_status()
            live = live.json()
            path = f"/api/runs/{live['run_id']}"
            wait_state(http, live["run_id"], {"running"})
            while http.get(path).json()["epoch"] < 1:  # in its training loop
                time.sleep(0.1)
            unloaded = epochs_per_s(http, live["run_id"], lambda: time.sleep(seconds))
            train_rps, _ = load(server, path, 32, seconds)
            result: dict = {}
            loaded = epochs_per_s(http, live["run_id"], lambda: result.update(
                zip(("rps", "lat"), load(server, path, 100, seconds))))
            if http.get(path).json()["state"] != "running":
                raise RuntimeError("the training run ended during the load")
            http.post(f"/api/runs/{live['run_id']}/cancel")
    finally:
        server.stop()
    return {"idle_rps": idle_rps, "train_rps": train_rps, "unloaded": unloaded,
            "loaded": loaded, **result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="duration of each measurement")
    ap.add_argument("--worker-nice", type=int, nargs="+", default=[0, 10],
                    help="training workers' niceness to compare (WORKBENCH_WORKER_NICE)")
    args = ap.parse_args()
    for nice in args.worker_nice:
        m = measure(args.seconds, nice)
        ms = np.array(m["lat"]) * 1000
        emit(case="status_rps_32_clients", worker_nice=nice,
             idle_req_per_s=round(m["idle_rps"], 1), training_req_per_s=round(m["train_rps"], 1),
             ratio=round(m["train_rps"] / m["idle_rps"], 3), goal_ratio=0.5,
             goal_training_req_per_s=2000)
        emit(case="status_latency_100_clients_training", worker_nice=nice, requests=len(ms),
             req_per_s=round(m["rps"], 1), p50_ms=round(float(np.percentile(ms, 50)), 2),
             p99_ms=round(float(np.percentile(ms, 99)), 2), max_ms=round(float(ms.max()), 2),
             goal_p99_ms=50)
        emit(case="training_epochs_per_s_under_load", worker_nice=nice,
             unloaded=round(m["unloaded"], 3), under_100_clients=round(m["loaded"], 3),
             ratio=round(m["loaded"] / m["unloaded"], 3) if m["unloaded"] else None,
             goal_ratio=0.8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
