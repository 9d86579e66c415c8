"""``workbench sweep SPEC.json`` and ``workbench sweeps``: Optuna sweeps through the front door.

    workbench sweep spec.json             # start it, a live bar (trials done, pruned, best)
    workbench sweep spec.json --no-wait   # print the sweep id and return
    workbench sweeps                      # every sweep: state, trials, best value and run
    workbench sweeps s_... [--cancel]     # one sweep's trials (or cancel it)

Ctrl-C while following a sweep cancels it. The spec format is ``workbench.sweeps.spec``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .output import fail, fmt, print_json, print_table
from .training import _connect


def _load_spec(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    spec = json.loads(text)
    if not isinstance(spec, dict):
        raise ValueError("a sweep spec is a JSON object")
    return spec


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={fmt(v, '.3g') if isinstance(v, float) else v}"
                    for k, v in params.items())


def print_trials(sweep: dict[str, Any]) -> None:
    rows = [(t["number"], t["state"], fmt(t["value"], ".4f"), _params(t["params"]),
             "-".join(map(str, t["layer_sizes"] or [])), t["run_id"] or "-",
             (t["error"] or "")[:60]) for t in sweep.get("trials", [])]
    print_table(("trial", "state", sweep["objective"], "params", "layers", "run_id", "error"),
                rows)


def print_best(sweep: dict[str, Any]) -> None:
    counts, best = sweep["counts"], sweep["best"]
    print(f"sweep {sweep['sweep_id']} ({sweep['name']}) {sweep['state']}: {counts['complete']} "
          f"complete, {counts['pruned']} pruned, {counts['failed']} failed; experiment "
          f"{sweep['experiment']}" + (f"; {sweep['error']}" if sweep.get("error") else ""))
    if best is not None:
        print(f"best: trial {best['number']} {sweep['objective']} {best['value']:.4f} "
              f"({_params(best['params'])}), run {best['run_id']}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..client import ApiError

    try:
        spec = _load_spec(args.spec)
    except (OSError, ValueError) as exc:
        return fail("sweep", f"cannot read {args.spec}: {exc}")
    client = _connect()
    try:
        sweep = client.sweep(spec)
    except ApiError as exc:
        print("workbench sweep: invalid sweep spec:", *(exc.errors or [exc.detail]),
              sep="\n  ", file=sys.stderr)
        return 2
    print(f"sweep {sweep['sweep_id']}: {sweep['budget_trials'] or 'timed'} trials, "
          f"{sweep['parallelism']} at once on {sweep['target']}, experiment "
          f"{sweep['experiment']}", file=sys.stderr)
    if args.no_wait:
        print(sweep["sweep_id"])
        return 0
    try:
        sweep = client.wait_sweep(sweep["sweep_id"], progress=not args.json)
    except KeyboardInterrupt:
        print("\nworkbench sweep: cancelling ...", file=sys.stderr)
        sweep = client.cancel_sweep(sweep["sweep_id"])
    if args.json:
        print_json(client.get_sweep(sweep["sweep_id"], importance=True))
        return 0 if sweep["state"] == "completed" else 1
    print_trials(sweep)
    print_best(sweep)
    return 0 if sweep["state"] == "completed" else 1


def cmd_sweeps(args: argparse.Namespace) -> int:
    from ..client import ApiError

    client = _connect()
    try:
        if args.sweep_id:
            sweep = client.cancel_sweep(args.sweep_id) if args.cancel \
                else client.get_sweep(args.sweep_id, importance=True)
            if args.json:
                print_json(sweep)
                return 0
            print_trials(sweep)
            print_best(sweep)
            if sweep.get("importance"):
                print("importance: " + ", ".join(f"{k} {v:.2f}"
                                                 for k, v in sweep["importance"].items()))
            return 0
        if args.cancel:
            return fail("sweeps", "--cancel needs a SWEEP_ID")
        sweeps = client.sweeps()
    except ApiError as exc:
        return fail("sweeps", "; ".join(exc.errors or [exc.detail]))
    if args.json:
        print_json(sweeps)
        return 0
    rows = []
    for s in sweeps:
        c, best = s["counts"], s["best"]
        rows.append((s["sweep_id"], s["name"], s["state"],
                     f"{c['complete'] + c['pruned'] + c['failed']}/{s['budget_trials'] or '-'}",
                     c["pruned"], s["objective"], fmt(best and best["value"], ".4f"),
                     (best or {}).get("run_id") or "-", (s["created_at"] or "")[:19]))
    print_table(("sweep_id", "name", "state", "trials", "pruned", "objective", "best", "best run",
                 "created_at"), rows)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("sweep", help="run an Optuna sweep from a JSON spec, live")
    p.add_argument("spec", help="the sweep spec, a JSON file ('-': stdin); see README 'Sweeps'")
    p.add_argument("--no-wait", action="store_true", help="print the sweep id and return")
    p.add_argument("--json", action="store_true", help="the finished sweep as JSON, no bar")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("sweeps", help="list sweeps, or show or cancel one")
    p.add_argument("sweep_id", nargs="?", help="show this sweep's trials")
    p.add_argument("--cancel", action="store_true", help="cancel SWEEP_ID")
    p.add_argument("--json", action="store_true", help="JSON for scripts")
    p.set_defaults(func=cmd_sweeps)
