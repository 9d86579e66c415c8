"""What ``workbench.track`` costs a training loop, and how fast points get into the store.

    python benchmarks/track_overhead.py                    # a fresh home, an on-demand owner
    python benchmarks/track_overhead.py --calls 100000 --repeats 5 --points 1000000

Everything goes through the front door, as a training script would: the benchmark makes a
temporary ``WORKBENCH_HOME`` (unless ``--home``) and the front door starts an owner for it
(stopped at the end). Prints one JSON line:

- ``log_us``: microseconds per ``run.log({"loss", "acc"}, step=i)`` over ``--calls`` calls,
  median of ``--repeats`` (the flush thread is running and sending meanwhile: its share of
  the GIL is in the number); target <= 5. ``baseline_us``: the same loop doing a bare
  ``list.append`` of the dict, measured alternately in the same run; ``log_ratio`` =
  log_us / baseline_us.
- ``ingest_points_per_s``: ``--points`` points (5 per call) from the first ``log`` until
  ``finish`` returned, so every point is in the owner's store (checked with ``workbench sql``);
  goal >= 200,000.
- ``store_points_per_s``: ``Store.apply_event`` of 10,000-point ``metrics`` batches (the
  owner's write path without HTTP), against ``store_baseline_points_per_s``: the same rows
  appended to a bare DuckDB table from numpy columns (no event log, no checks);
  ``store_ratio`` = store / baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def log_overhead(wb, calls: int, repeats: int) -> dict[str, Any]:
    run = wb.init(name="bench-log-overhead", experiment="benchmarks", system_metrics=False)
    data = {"loss": 0.5, "acc": 0.9}
    log_us, base_us = [], []
    for _ in range(repeats):
        sink: list = []
        append = sink.append
        start = time.perf_counter()
        for _i in range(calls):
            append(data)
        base_us.append((time.perf_counter() - start) / calls * 1e6)
        log = run.log
        start = time.perf_counter()
        for i in range(calls):
            log(data, step=i)
        log_us.append((time.perf_counter() - start) / calls * 1e6)
    run.finish()
    med_log, med_base = statistics.median(log_us), statistics.median(base_us)
    return {"log_us": round(med_log, 3), "baseline_us": round(med_base, 3),
            "log_ratio": round(med_log / med_base, 1), "log_us_all": [round(v, 3) for v in log_us]}


def ingest(wb, client, points: int) -> dict[str, float]:
    calls = points // 5
    run = wb.init(name="bench-ingest", experiment="benchmarks", system_metrics=False)
    log = run.log
    start = time.perf_counter()
    for i in range(calls):
        log({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": float(i)}, step=i)
    logged = time.perf_counter() - start
    run.finish()
    elapsed = time.perf_counter() - start
    stored = client.sql(f"SELECT count(*) FROM metrics WHERE run_id = '{run.run_id}'")
    count = stored["rows"][0][0]
    assert count == calls * 5, (count, calls * 5)
    return {"ingest_points_per_s": round(count / elapsed), "ingest_points": count,
            "ingest_s": round(elapsed, 3), "ingest_logging_s": round(logged, 3),
            "ingest_batches": run.sent_batches}


def store_rate(batches: int = 30, size: int = 10_000) -> dict[str, float]:
    import duckdb
    import numpy as np

    from workbench import events as ev
    from workbench.store import Store

    folder = Path(tempfile.mkdtemp(prefix="wb-bench-store-"))
    now = time.time()
    cols = {"key": [f"m{i % 5}" for i in range(size)], "value": [float(i) for i in range(size)],
            "step": list(range(size)), "epoch": [0] * size, "time": [now] * size}
    with Store(folder / "s.duckdb") as store:
        run = store.create_external_run(hyperparams={"name": "bench"})
        start = time.perf_counter()
        for b in range(batches):
            store.apply_event(ev.make_event(ev.METRICS, run.run_id, batch_id=f"b{b}",
                                            count=size, **cols))
        store_s = time.perf_counter() - start
    con = duckdb.connect(str(folder / "bare.duckdb"))
    con.execute("CREATE TABLE metrics (run_id VARCHAR NOT NULL, epoch INTEGER NOT NULL, "
                "step BIGINT, name VARCHAR NOT NULL, value DOUBLE, time TIMESTAMP NOT NULL)")
    con.execute("CREATE INDEX metrics_run_idx ON metrics (run_id)")
    start = time.perf_counter()
    for _ in range(batches):
        frame = {"epoch": np.zeros(size, dtype=np.int32), "step": np.array(cols["step"]),
                 "name": np.array(cols["key"], dtype=object), "value": np.array(cols["value"]),
                 "time": (np.array(cols["time"]) * 1e6).astype(np.int64).astype("datetime64[us]")}
        con.begin()
        con.register("batch", frame)
        con.execute("INSERT INTO metrics SELECT 'r', epoch, step, name, value, time FROM batch")
        con.unregister("batch")
        con.commit()
    bare_s = time.perf_counter() - start
    con.close()
    store_pps, bare_pps = batches * size / store_s, batches * size / bare_s
    return {"store_points_per_s": round(store_pps),
            "store_baseline_points_per_s": round(bare_pps),
            "store_ratio": round(store_pps / bare_pps, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--home", type=Path, default=None, help="default: a temporary home")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="wb-bench-track-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    for name in ("WORKBENCH_SERVER_URL", "WORKBENCH_TOKEN"):
        os.environ.pop(name, None)

    import workbench.track as wb
    from workbench.frontdoor import connect, stop_owner

    client = connect(quiet=True)  # starts this home's owner if none runs
    try:
        result: dict[str, object] = {"benchmark": "track_overhead", "calls": args.calls,
                                     "repeats": args.repeats, "cpus": os.cpu_count()}
        result.update(log_overhead(wb, args.calls, args.repeats))
        result.update(ingest(wb, client, args.points))
        result.update(store_rate())
        result["log_target_met"] = result["log_us"] <= 5.0  # type: ignore[operator]
        result["ingest_goal_met"] = result["ingest_points_per_s"] >= 200_000  # type: ignore[operator]
    finally:
        if args.home is None:
            stop_owner()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
