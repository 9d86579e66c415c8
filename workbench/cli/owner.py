"""``workbench serve | stop | status``: the process that owns a store, and who that is now."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .output import print_summary


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server import ServeOptions, serve
    from ..store import StoreLockedError

    try:
        return serve(ServeOptions(host=args.host, port=args.port, uds=args.uds,
                                  workers=args.workers, log_level=args.log_level,
                                  trainer_open=args.trainer_open, on_demand=args.on_demand))
    except StoreLockedError as exc:
        sys.exit(f"workbench serve: {exc}")


def cmd_stop(args: argparse.Namespace) -> int:
    from ..frontdoor import stop_owner

    stopped = stop_owner()
    if stopped is None:
        print("workbench stop: no owner is running for this home", file=sys.stderr)
        return 0
    print(f"workbench stop: stopped pid {stopped.pid} ({stopped.url})", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from ..config import get_settings
    from ..frontdoor import live_owner

    owner = live_owner()
    home = get_settings().home
    if owner is None:
        print(f"no owner is running for {home} (any command starts one)", file=sys.stderr)
        return 1
    print_summary({"home": str(home), "url": owner.url, "pid": owner.pid,
                   "on_demand": owner.on_demand, "version": owner.version,
                   "up_s": round(time.time() - owner.started_at, 1) if owner.started_at else None})
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("serve", help="own the store and serve the REST API and the app on one "
                       "port")
    p.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default: %(default)s)")
    p.add_argument("--uds", help="listen on this Unix socket instead (the JupyterLab tile and "
                   "on-demand owners use one)")
    p.add_argument("--workers", type=int, default=None,
                   help="training runs at once (default: WORKBENCH_WORKERS or 2)")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="server log detail")
    p.add_argument("--trainer-open", action="store_true",
                   help="let loopback clients use the distributed-trainer API without a token")
    p.add_argument("--on-demand", action="store_true",
                   help="started by the front door: stop after WORKBENCH_OWNER_IDLE_S idle")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stop", help="stop the process that owns this home's store")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("status", help="which process owns this home's store, and where")
    p.set_defaults(func=cmd_status)
