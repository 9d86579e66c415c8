"""The Devices tab's first table: every place a run can go -- this machine's CPU and GPUs, each
registered Jupyter node and each ``workbench worker`` registered with the distributed trainer
-- with status, load, queue, measured peak, current run and when it was last seen. Read from
the store the service owns (the app runs in the owner); a worker's status and load come from
its public ``/health`` (no token sent), asked when the table is drawn."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .. import peaks
from ..distributed.worker import worker_health
from ..store.jobs import TrainerJobs
from ..system_metrics import machine_load
from .theme import escape_html

NO_NODES = ("No remote nodes registered. An admin adds a Jupyter Server to train on in the "
            "form below (or with <code>workbench nodes add URL</code>); it then shows here and "
            "as a target in the Train tab.")


WORKER_HEALTH_S = 1.0  # a worker that does not answer this fast shows as offline


def local_devices() -> list[str]:
    import torch

    return ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "–"
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    s = max(0, int((now - when).total_seconds()))
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def target_rows(service: Any, now: datetime | None = None,
                known_peaks: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """One row per local device and registered node. ``known_peaks``: peaks the session has
    already (its own device's), used where the peak file has none for this thread count."""
    now = now or datetime.now(timezone.utc)
    store = service.store
    active, _cursor = store.list_runs(state=["queued", "running"], limit=1000)
    by_target: dict[str, list[Any]] = {}
    for run in active:
        by_target.setdefault(run.target, []).append(run)

    def work(target: str, device: str | None = None) -> tuple[str, int, str]:
        """(current run, runs queued, the current run's training process load)."""
        runs = [r for r in by_target.get(target, [])
                if device is None or (r.device or "cpu").startswith(device)]
        running = [r for r in runs if r.state == "running"]
        queued = sum(r.state == "queued" for r in runs)
        if not running:
            return "–", queued, "–"
        return running[0].run_id, queued, process_load(running[0].metrics)

    rows = []
    devices = local_devices()
    load = machine_load(gpus=len(devices) - 1)
    for device in devices:
        peak = peaks.stored(device)
        tflops = peak.tflops if peak is not None else (known_peaks or {}).get(device)
        current, queued, process = work("local", device)
        rows.append({"where": "this machine", "device": device, "status": "online",
                     "load": load.get(device, "–"), "queued": queued,
                     "peak_tflops": tflops, "current_run": current, "process": process,
                     "last_seen": "now"})
    for node in store.list_nodes(limit=1000):
        gpu = (node.gpu_info or {}).get("model")
        current, queued, process = work(node.node_id)
        rows.append({"where": f"node {node.name}", "device": gpu or f"CPU × {node.cpu_count}",
                     "status": node.status,
                     "load": "–" if node.current_load is None else f"{node.current_load:.2f}",
                     "queued": queued, "peak_tflops": node.performance_score,
                     "current_run": current, "process": process,
                     "last_seen": _ago(node.last_seen, now),
                     "node_id": node.node_id})
    return rows + worker_rows(store)


def process_load(metrics: dict[str, float]) -> str:
    """A running run's training process as its last epoch's system metrics saw it (sampled
    where it trains: this machine, a node's kernel), e.g. ``CPU 180% · RSS 412 MiB · GPU 85%``."""
    parts = []
    if (cpu := metrics.get("system/cpu_percent")) is not None:
        parts.append(f"CPU {cpu:.0f}%")
    if (rss := metrics.get("system/rss_bytes")) is not None:
        parts.append(f"RSS {rss / 2**20:.0f} MiB")
    if (gpu := metrics.get("system/gpu0/utilization_percent")) is not None:
        parts.append(f"GPU {gpu:.0f}%")
    return " · ".join(parts) or "–"


def worker_rows(store: Any) -> list[dict[str, Any]]:
    """One row per ``workbench worker`` registered with a distributed-trainer job."""
    rows = []
    for device in TrainerJobs(store).list_devices():
        try:
            health = worker_health(device.ip, device.port, timeout_s=WORKER_HEALTH_S)
        except (RuntimeError, OSError, ValueError):
            health = None
        jobs = (health or {}).get("jobs") or []
        max_ranks = (health or {}).get("max_ranks") or 0
        rows.append({
            "where": f"worker {device.ip}:{device.port}",
            "device": f"{(health or {}).get('device') or '?'} · trainer device "
                      f"#{device.device_id}",
            "status": "offline" if health is None else ("busy" if jobs else "online"),
            "load": f"{len(jobs) / max_ranks:.2f}" if max_ranks else "–",
            "queued": 0,  # a worker runs what a job hands it; it keeps no queue
            "peak_tflops": device.score if device.score is not None
            else (health or {}).get("score_tflops"),
            "current_run": f"job {device.job_id}", "process": "–",
            "last_seen": "–" if health is None else "now",
            "worker": f"{device.ip}:{device.port}"})
    return rows


def targets_table(rows: list[dict[str, Any]]) -> str:
    head = ("<tr><th>where</th><th>device</th><th>status</th><th>load</th><th>queued</th>"
            "<th>measured peak (TFLOPS)</th><th>current run</th><th>training process</th>"
            "<th>last seen</th></tr>")
    body = "".join(
        f"<tr><td>{escape_html(r['where'])}</td><td>{escape_html(r['device'])}</td>"
        f"<td>{escape_html(r['status'])}</td><td>{escape_html(r['load'])}</td>"
        f"<td>{r['queued']}</td>"
        f"<td>{'measuring…' if r['peak_tflops'] is None else format(r['peak_tflops'], '.3g')}"
        f"</td><td><code>{escape_html(r['current_run'])}</code></td>"
        f"<td>{escape_html(r.get('process', '–'))}</td>"
        f"<td>{escape_html(r['last_seen'])}</td></tr>" for r in rows)
    nodes = any("node_id" in r for r in rows)
    return (f"<table class='wb-stages wb-targets'>{head}{body}</table>"
            + ("" if nodes else f"<div class='wb-empty'>{NO_NODES}</div>"))
