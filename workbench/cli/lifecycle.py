"""``workbench pause`` and ``workbench resume``: stop a run at a checkpoint, continue it on the
same or another target (see ``workbench.service.checkpoints``)."""

from __future__ import annotations

import argparse
from typing import Any

from .output import fail
from .training import _connect


def cmd_pause(args: argparse.Namespace) -> int:
    from ..client import ApiError

    try:
        run = _connect().pause(args.run_id)
    except ApiError as exc:
        return fail("pause", "; ".join(exc.errors or [exc.detail]))
    if run["state"] == "paused":
        print(f"{args.run_id} paused at epoch {run['epoch']}")
    else:
        print(f"{args.run_id} pauses at the end of epoch {run['epoch'] + 1} "
              "(workbench runs --state paused)")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ..client import ApiError

    try:
        run = _connect().resume(args.run_id, target=args.target)
    except ApiError as exc:
        return fail("resume", "; ".join(exc.errors or [exc.detail]))
    print(f"{args.run_id} resumed from epoch {run['epoch']} on {run['target']} "
          f"(workbench watch {args.run_id})")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("pause", help="pause a run at the end of its current epoch (checkpoint)")
    p.add_argument("run_id", help="the run (r_...) to pause")
    p.set_defaults(func=cmd_pause)

    p = sub.add_parser("resume", help="resume a paused run from its last checkpoint")
    p.add_argument("run_id", help="the paused run (r_...)")
    p.add_argument("--target", help="continue on another target: local, local-kernel, ray or a "
                   "node id (default: where it ran)")
    p.set_defaults(func=cmd_resume)
