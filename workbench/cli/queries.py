"""``workbench runs`` and ``workbench sql``: read the store through the front door."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .output import fail, fmt, print_table
from .training import _connect

# What `workbench runs` shows unless --columns says otherwise (every column: --columns all).
RUN_COLUMNS = ("run_id", "name", "experiment", "tags", "model", "state", "error", "epoch",
               "dataset", "target", "device", "optimizer", "lr", "batch_size", "architecture",
               "best_val_accuracy", "test_accuracy", "samples_per_s", "duration_s",
               "created_at")
ALL_COLUMNS = ("run_id", "name", "experiment", "tags", "notes", "state", "error", "model_id",
               "model", "dataset", "target", "device", "optimizer", "lr", "batch_size",
               "epochs", "epoch", "architecture", "created_at", "started_at", "finished_at",
               "duration_s", "param_id", "best_val_accuracy", "final_val_accuracy",
               "best_val_loss", "final_val_loss", "final_train_loss", "test_accuracy",
               "test_loss", "samples_per_s", "total_tflops")


def _quoted(value: str) -> str:
    """A filter string literal (the filter doubles quotes inside)."""
    return "'" + value.replace("'", "''") + "'"


def runs_filter(args: argparse.Namespace) -> str | None:
    """The filter of the flags: --filter, and --model (a name or an id), --state,
    --experiment, --tag as conditions joined with 'and'."""
    parts = []
    if args.model:
        parts.append(f"(model = {_quoted(args.model)} or model_id = {_quoted(args.model)})")
    if args.state:
        parts.append(f"state = {args.state}")
    if args.experiment:
        parts.append(f"experiment = {_quoted(args.experiment)}")
    parts += [f"tag:{_quoted(tag)}" for tag in args.tag or ()]
    if args.filter:  # alone it is sent as typed, so an error's position is in the user's text
        parts.insert(0, f"({args.filter})" if parts else args.filter)
    return " and ".join(parts) or None


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, float):
        if column in ("samples_per_s", "duration_s"):
            return fmt(value, ",.0f" if column == "samples_per_s" else ",.1f")
        return fmt(value, ".4g")
    if column.endswith("_at"):
        return str(value)[:19].replace("T", " ")
    return str(value)


def cmd_runs(args: argparse.Namespace) -> int:
    from ..client import ApiError

    if args.columns == "all":
        columns = list(ALL_COLUMNS)
    elif args.columns:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    else:
        columns = list(RUN_COLUMNS)
    client = _connect()
    where = runs_filter(args)
    try:
        if args.export:
            fmt_ = "parquet" if args.export.endswith(".parquet") else "csv"
            data = client.export_runs(fmt_, filter=where, sort=args.sort, columns=columns)
            with open(args.export, "wb") as f:
                f.write(data)
            print(f"workbench runs: wrote {args.export}", file=sys.stderr)
            return 0
        rows: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None and len(rows) < args.limit:
            page = client.runs_table(filter=where, sort=args.sort, columns=columns,
                                     limit=min(1000, args.limit - len(rows)), offset=offset)
            rows += page["items"]
            offset = page["next_offset"]
    except ApiError as exc:
        return fail("runs", "; ".join(exc.errors) or exc.detail)
    except OSError as exc:
        return fail("runs", f"cannot write {args.export}: {exc}")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table(columns, [[_cell(c, r.get(c)) for c in columns] for r in rows])
    return 0


def cmd_run_update(args: argparse.Namespace) -> int:
    from ..client import ApiError

    tags = None if args.tags is None else [t for t in args.tags.split(",") if t.strip()]
    try:
        run = _connect().update_run(args.run_id, name=args.name, experiment=args.experiment,
                                    tags=tags, notes=args.notes)
    except ApiError as exc:
        return fail("run-update", "; ".join(exc.errors) or exc.detail)
    print(f"{run['run_id']}  {run['name']}  experiment={run['experiment']}  "
          f"tags={','.join(run['tags']) or '-'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..client import ApiError

    metrics = args.metrics.split(",") if args.metrics else None
    client = _connect()
    try:
        if args.report:
            page = client.report(args.run_ids, metrics=metrics, x=args.x, title=args.title)
            with open(args.report, "w", encoding="utf-8") as f:
                f.write(page)
            print(f"workbench compare: wrote {args.report}", file=sys.stderr)
            return 0
        data = client.compare_runs(args.run_ids, metrics=metrics, x=args.x)
    except ApiError as exc:
        return fail("compare", "; ".join(exc.errors) or exc.detail)
    except OSError as exc:
        return fail("compare", f"cannot write {args.report}: {exc}")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    names = [data["names"][r] for r in data["run_ids"]]
    rows = [[("* " if d["differs"] else "  ") + d["key"], *map(str, d["values"])]
            for d in data["diff"] if d["differs"] or args.all]
    print_table(["setting (* differs)", *names], rows)
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from ..client import ApiError

    client = _connect()
    try:
        if args.create:
            items = [client.create_experiment(args.create, args.description or "")]
        elif args.describe:
            items = [client.describe_experiment(args.describe, args.description or "")]
        else:
            items = client.experiments()
    except ApiError as exc:
        return fail("experiments", "; ".join(exc.errors) or exc.detail)
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    print_table(["experiment", "description", "runs", "running", "succeeded", "failed",
                 "best val_accuracy", "best run", "last run"],
                [[e["name"], _short(e["description"]), e["runs"], e["running"],
                  e["succeeded"], e["failed"], _cell("value", (e["best"] or {}).get("value")),
                  (e["best"] or {}).get("run_name") or "-",
                  _cell("last_run_at", e["last_run_at"])] for e in items])
    return 0


def _short(text: str, width: int = 40) -> str:
    """A description's first line, cut to ``width`` characters, for one table cell."""
    line = text.splitlines()[0] if text else "-"
    return line if len(line) <= width else line[:width - 1] + "…"


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
    p = sub.add_parser("runs", help="the runs table, newest first: filter, sort, columns, "
                       "export")
    p.add_argument("--filter", help="e.g. \"val_accuracy > 0.9 and optimizer = adam and "
                   "tag:baseline\"")
    p.add_argument("--model", help="only runs of this model (its name or id)")
    p.add_argument("--state", choices=["queued", "running", "paused", "succeeded", "failed", "cancelled"])
    p.add_argument("--experiment", help="only runs of this experiment")
    p.add_argument("--tag", action="append", help="only runs with this tag (repeatable)")
    p.add_argument("--columns", help=f"comma-separated, or 'all' (default: {','.join(RUN_COLUMNS)})")
    p.add_argument("--sort", default="-created_at",
                   help="a column, '-' first for descending")
    p.add_argument("--limit", type=int, default=50, help="at most this many rows")
    p.add_argument("--export", metavar="FILE", help="write the table to FILE.csv or "
                   "FILE.parquet instead (every matching run)")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("run-update", help="rename a run, set its experiment, tags or notes")
    p.add_argument("run_id", help="the run (r_...) to change")
    p.add_argument("--name", help="its new name")
    p.add_argument("--experiment", help="move it to this experiment")
    p.add_argument("--tags", help="comma-separated; replaces the run's tags ('' clears them)")
    p.add_argument("--notes", help="free text kept with the run")
    p.set_defaults(func=cmd_run_update)

    p = sub.add_parser("compare", help="what differs between runs; --report writes an HTML "
                       "report")
    p.add_argument("run_ids", nargs="+", help="two or more runs (r_...)")
    p.add_argument("--metrics", help="comma-separated (default: val_loss,val_accuracy,"
                   "train_loss)")
    p.add_argument("--x", choices=["epoch", "step", "time"], default="epoch",
                   help="what the report's charts put on the x axis")
    p.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    p.add_argument("--title", help="the report's title")
    p.add_argument("--all", action="store_true", help="show settings that are equal too")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("experiments", help="experiments: descriptions, runs, best run; "
                       "--create or --describe one")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--create", metavar="NAME", help="a new experiment (runs join it by "
                       "naming it: run-update --experiment NAME)")
    group.add_argument("--describe", metavar="NAME", help="set this experiment's description")
    p.add_argument("--description", help="what the experiment is for (with --create or "
                   "--describe)")
    p.add_argument("--json", action="store_true", help="print them as JSON")
    p.set_defaults(func=cmd_experiments)

    p = sub.add_parser("sql", help="read-only SQL over the store's views (models, runs, "
                       "metrics, params, events, run_summary, experiments)")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=1000, help="at most this many rows (default 1000)")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=cmd_sql)
