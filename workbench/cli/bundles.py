"""``workbench bundle export|import`` and ``workbench rerun``: move a run to another home as one
file, and train it again to check that it reproduces (see ``workbench.bundles``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .output import fail, fmt, print_table
from .training import _connect


def _errors(exc: Any) -> str:
    return "; ".join(exc.errors or [exc.detail])


def cmd_bundle_export(args: argparse.Namespace) -> int:
    from ..client import ApiError

    try:
        data = _connect().export_bundle(args.run_id)
    except ApiError as exc:
        return fail("bundle export", _errors(exc))
    out = Path(args.output or f"{args.run_id}.wbrun.zip")
    out.write_bytes(data)
    print(f"{args.run_id} -> {out} ({len(data):,} bytes)")
    return 0


def _read(command: str, path: str) -> tuple[bytes, Any] | int:
    from .. import bundles

    try:
        data = Path(path).read_bytes()
        return data, bundles.read(data)
    except OSError as exc:
        return fail(command, f"cannot read {path}: {exc.strerror or exc}")
    except bundles.BundleError as exc:
        return fail(command, str(exc))


def cmd_bundle_import(args: argparse.Namespace) -> int:
    from ..client import ApiError

    read = _read("bundle import", args.file)
    if isinstance(read, int):
        return read
    try:
        run = _connect().import_bundle(read[0])
    except ApiError as exc:
        return fail("bundle import", _errors(exc))
    print(f"imported {run['run_id']} ({run['name']}, {run['state']}, model {run['model_id']})")
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    """Exit 0 when every compared metric of every epoch is within --tolerance, 1 when not."""
    from .. import bundles
    from ..client import ApiError

    read = _read("rerun", args.file)
    if isinstance(read, int):
        return read
    data, original = read
    client = _connect()
    try:
        started = client.rerun_bundle(data, target=args.target)
        run_id = started["run"]["run_id"]
        print(f"rerunning {started['original_run_id']} as {run_id} on {args.target}",
              file=sys.stderr)
        run = client.wait(run_id, timeout=args.timeout, progress=False)
        if run["state"] != "succeeded":
            return fail("rerun", f"{run_id} ended {run['state']}: {run.get('error')}", 1)
        again = bundles.read(client.export_bundle(run_id))
    except ApiError as exc:
        return fail("rerun", _errors(exc))
    except TimeoutError:
        return fail("rerun", f"the rerun did not finish in {args.timeout} s", 1)
    result = bundles.compare(original, again, tolerance=args.tolerance)
    print_table(["epoch", "metric", "original", "rerun", "|diff|"],
                [[epoch, name, fmt(a, ".6g") if a is not None else "-",
                  fmt(b, ".6g") if b is not None else "-",
                  fmt(diff, ".3g") if diff is not None else "missing"]
                 for epoch, name, a, b, diff in result.rows])
    if result.equal:
        print(f"equal: {len(result.rows)} values within {args.tolerance:g} ({run_id})")
        return 0
    worse = sum(1 for *_r, diff in result.rows if diff is None or diff > args.tolerance)
    print(f"DIFFERENT: {worse} of {len(result.rows)} values beyond {args.tolerance:g} "
          f"({run_id})")
    return 1


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("bundle", help="export a run as one portable file, or import one")
    verbs = p.add_subparsers(dest="bundle_command", required=True, metavar="export|import")
    q = verbs.add_parser("export", help="write a finished run to a bundle file (zip)")
    q.add_argument("run_id", help="the finished run (r_...)")
    q.add_argument("-o", "--output", help="the file to write (default RUN_ID.wbrun.zip)")
    q.set_defaults(func=cmd_bundle_export)
    q = verbs.add_parser("import", help="store a bundle's run in this home")
    q.add_argument("file", help="a bundle written by `workbench bundle export`")
    q.set_defaults(func=cmd_bundle_import)

    p = sub.add_parser("rerun", help="train a bundle's run again and compare its metrics "
                       "(exit 1 if they differ)")
    p.add_argument("file", help="a bundle written by `workbench bundle export`")
    p.add_argument("--target", default="local",
                   help="where to train it: local, local-kernel, ray or a node id")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="largest absolute difference per metric that still counts as equal")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds to wait for the rerun to finish")
    p.set_defaults(func=cmd_rerun)
