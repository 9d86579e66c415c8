"""``workbench runs`` and ``workbench sql``: read the store through the front door."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .output import fail, fmt, print_table
from .training import _connect

RUN_COLUMNS = ("run", "model", "state", "epoch", "dataset", "target", "device", "val_acc",
               "test_acc", "samples/s", "TFLOPS", "created")


def run_row(r: dict[str, Any]) -> list[str]:
    m = r.get("metrics") or {}
    return [
        r["run_id"], r["model_id"], r["state"], f"{r['epoch']}/{r['epochs_total']}", r["dataset"],
        r.get("target") or "-", r.get("device") or "-", fmt(m.get("val_accuracy"), ".4f"),
        fmt(m.get("test_accuracy"), ".4f"), fmt(m.get("samples_per_s"), ",.0f"),
        fmt(m.get("total_tflops"), ".4g"), (r.get("created_at") or "")[:19].replace("T", " "),
    ]


def cmd_runs(args: argparse.Namespace) -> int:
    from ..client import ApiError

    client = _connect()
    runs: list[dict[str, Any]] = []
    cursor = None
    try:
        while len(runs) < args.limit:  # newest first, across pages
            page = client.runs(state=args.state, model_id=args.model, cursor=cursor,
                               limit=min(500, args.limit - len(runs)))
            runs += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                break
    except ApiError as exc:
        return fail("runs", exc.detail)
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print_table(RUN_COLUMNS, [run_row(r) for r in runs])
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from ..client import ApiError

    client = _connect()
    try:
        result = client.sql(args.query, limit=args.limit)
    except ApiError as exc:
        return fail("sql", exc.detail)
    columns, rows = result["columns"], result["rows"]
    if args.json:
        print(json.dumps([dict(zip(columns, row)) for row in rows], default=str))
    else:
        print_table(columns, rows)
    if result.get("truncated"):
        print(f"workbench sql: showing the first {args.limit} rows (--limit for more)",
              file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--model", help="only runs of this model id")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="print runs as JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("sql", help="read-only SQL over the store's views (models, runs, "
                       "metrics, params, events, run_summary)")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=cmd_sql)
