"""``workbench nodes add URL --token ... | list | check ID | rm ID``: remote Jupyter Servers
to train on, through the front door (``/api/v1/nodes`` of this home's owner)."""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

from .output import fail, print_table
from .training import _connect


def add_parsers(sub: Any) -> None:
    """Add ``nodes`` to the ``workbench`` subcommands."""
    p = sub.add_parser("nodes", help="register and list remote Jupyter Servers to train on")
    nodes = p.add_subparsers(dest="nodes_command", required=True)

    add = nodes.add_parser("add", help="register a Jupyter Server (probes its capabilities)")
    add.add_argument("url", help="the server's address, e.g. http://gpu-box:8888")
    add.add_argument("--token", help="the server's token (asked for when omitted)")
    add.add_argument("--name", help="a name to show instead of the address")
    add.add_argument("--region", help="a free-form location label, to filter by")
    add.add_argument("--json", action="store_true", help="print the node as JSON")
    add.set_defaults(func=cmd_nodes)

    ls = nodes.add_parser("list", help="list registered nodes")
    ls.add_argument("--status", choices=["online", "busy", "offline"],
                    help="only nodes in this state")
    ls.add_argument("--region", help="only nodes of this region")
    ls.add_argument("--json", action="store_true", help="print nodes as JSON")
    ls.set_defaults(func=cmd_nodes)

    check = nodes.add_parser("check", help="health-check a node now")
    check.add_argument("node_id", help="the node's id, as `workbench nodes list` shows it")
    check.add_argument("--json", action="store_true", help="print the node as JSON")
    check.set_defaults(func=cmd_nodes)

    rm = nodes.add_parser("rm", help="forget a node and its token")
    rm.add_argument("node_id", help="the node's id, as `workbench nodes list` shows it")
    rm.set_defaults(func=cmd_nodes)


def cmd_nodes(args: argparse.Namespace) -> int:
    from ..client import ApiError

    if args.nodes_command == "add" and not args.token:
        args.token = getpass.getpass(f"token for {args.url}: ")
    client = _connect()
    command = args.nodes_command
    try:
        if command == "add":
            body = {"url": args.url, "token": args.token, "name": args.name,
                    "region": args.region}
            result: Any = client.v1("POST", "/nodes", json=body, timeout=300)
        elif command == "list":
            params = {k: v for k, v in (("status", args.status), ("region", args.region)) if v}
            result = client.v1_all("/nodes", **params)
        elif command == "check":
            result = client.v1("POST", f"/nodes/{args.node_id}/check", timeout=300)
        else:
            client.v1("DELETE", f"/nodes/{args.node_id}")
            result = {"id": args.node_id, "status": "removed"}
    except ApiError as exc:
        return fail("nodes", f"{exc.detail} (HTTP {exc.status})")
    _print(args, result)
    return 0


# ---- output --------------------------------------------------------------------------------------
def _print(args: argparse.Namespace, result: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
        return
    if args.nodes_command == "rm":
        print(f"removed {result['id']}")
        return
    rows = result if isinstance(result, list) else [result]
    table = []
    for n in rows:
        gpu = n.get("gpu_info") or {}
        table.append((
            n["id"], n["name"], n["status"], n.get("region") or "-",
            f"{gpu['model']} ({gpu['memory']}, sm {gpu['compute_capability']})" if gpu else "none",
            str(n.get("cpu_count") or "-"), n.get("torch_version") or "-",
            "-" if n.get("performance_score") is None else f"{n['performance_score']:.4g}",
            "-" if n.get("current_load") is None else f"{n['current_load']:.2f}",
            n.get("uptime") or "-", n["url"],
        ))
    # One table style for every command: long ids fold, never "nod…" (output.print_table).
    print_table(("id", "name", "status", "region", "gpu", "cpus", "torch", "TFLOPS", "load",
                 "uptime", "url"), table)
