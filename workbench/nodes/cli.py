"""``workbench nodes add URL --token ... | list | check ID | rm ID``.

When a ``workbench serve`` owns the store (``WORKBENCH_SERVER_URL`` or the server-info file in
``WORKBENCH_HOME``), the command goes through its REST API (``/api/v1/nodes``, with
``WORKBENCH_TOKEN`` as the API key); otherwise it opens the store itself.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any


def add_nodes_parser(sub: Any) -> None:
    """Add ``nodes`` to the ``workbench`` subcommands."""
    p = sub.add_parser("nodes", help="register and list remote Jupyter Servers to train on")
    nodes = p.add_subparsers(dest="nodes_command", required=True)

    add = nodes.add_parser("add", help="register a Jupyter Server (probes its capabilities)")
    add.add_argument("url", help="the server's address, e.g. http://gpu-box:8888")
    add.add_argument("--token", help="the server's token (asked for when omitted)")
    add.add_argument("--name")
    add.add_argument("--region")
    add.add_argument("--json", action="store_true", help="print the node as JSON")
    add.set_defaults(func=cmd_nodes)

    ls = nodes.add_parser("list", help="list registered nodes")
    ls.add_argument("--status", choices=["online", "busy", "offline"])
    ls.add_argument("--region")
    ls.add_argument("--json", action="store_true", help="print nodes as JSON")
    ls.set_defaults(func=cmd_nodes)

    check = nodes.add_parser("check", help="health-check a node now")
    check.add_argument("node_id")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_nodes)

    rm = nodes.add_parser("rm", help="forget a node and its token")
    rm.add_argument("node_id")
    rm.set_defaults(func=cmd_nodes)


class _Failed(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def cmd_nodes(args: argparse.Namespace) -> int:
    from ..jupyter.discovery import running_server

    if args.nodes_command == "add" and not args.token:
        args.token = getpass.getpass(f"token for {args.url}: ")
    server = running_server()
    try:
        result = _via_server(server.url, server.token, args) if server else _via_store(args)
    except _Failed as exc:
        print(f"workbench nodes: {exc}", file=sys.stderr)
        return exc.code
    _print(args, result)
    return 0


# ---- two ways to do it -------------------------------------------------------------------------
def _via_store(args: argparse.Namespace) -> Any:
    from ..store import Store, StoreLockedError
    from . import NodeError, NodeRegistry, UnknownNode, node_public

    try:
        store = Store()
    except StoreLockedError as exc:
        raise _Failed(str(exc)) from None
    nodes = NodeRegistry(store)
    try:
        def view(node: Any) -> dict[str, Any]:
            return node_public(node, tasks_completed=nodes.tasks_completed(node.node_id)
                               ).model_dump(mode="json")

        command = args.nodes_command
        if command == "add":
            return view(nodes.register(args.url, args.token, name=args.name, region=args.region))
        if command == "list":
            return [view(n) for n in nodes.list(status=args.status, region=args.region,
                                                limit=100_000)[0]]
        if command == "check":
            return view(nodes.check(args.node_id))
        nodes.remove(args.node_id)
        return {"id": args.node_id, "status": "removed"}
    except (UnknownNode, NodeError, ValueError) as exc:
        raise _Failed(str(exc), code=2) from None
    finally:
        nodes.close()
        store.close()


def _via_server(url: str, token: str | None, args: argparse.Namespace) -> Any:
    import httpx

    from ..jupyter.discovery import UNIX_PREFIX

    if url.startswith(UNIX_PREFIX):
        transport, base = httpx.HTTPTransport(uds=url[len(UNIX_PREFIX):]), "http://workbench"
    else:
        transport, base = httpx.HTTPTransport(), url
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    command = args.nodes_command
    with httpx.Client(base_url=base + "/api/v1/nodes", headers=headers, transport=transport,
                      timeout=300, trust_env=False) as http:
        if command == "add":
            body = {"url": args.url, "token": args.token, "name": args.name,
                    "region": args.region}
            response = http.post("", json=body)
        elif command == "list":
            params = {k: v for k, v in (("status", args.status), ("region", args.region)) if v}
            items: list[Any] = []
            page = 1
            while True:  # all pages
                response = http.get("", params={**params, "page": page, "limit": 100})
                if response.status_code >= 400:
                    break
                items += response.json()["data"]
                if page >= response.json()["meta"]["pagination"]["pages"]:
                    return items
                page += 1
        elif command == "check":
            response = http.post(f"/{args.node_id}/check")
        else:
            response = http.delete(f"/{args.node_id}")
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise _Failed(f"{message} (HTTP {response.status_code} from {url})", code=2)
    return response.json()["data"]


# ---- output --------------------------------------------------------------------------------------
def _print(args: argparse.Namespace, result: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
        return
    if args.nodes_command == "rm":
        print(f"removed {result['id']}")
        return
    from rich.console import Console
    from rich.table import Table

    rows = result if isinstance(result, list) else [result]
    table = Table("id", "name", "status", "region", "gpu", "cpus", "torch", "TFLOPS", "load",
                  "uptime", "url")
    for n in rows:
        gpu = n.get("gpu_info") or {}
        table.add_row(
            n["id"], n["name"], n["status"], n.get("region") or "-",
            f"{gpu['model']} ({gpu['memory']}, sm {gpu['compute_capability']})" if gpu else "none",
            str(n.get("cpu_count") or "-"), n.get("torch_version") or "-",
            "-" if n.get("performance_score") is None else f"{n['performance_score']:.4g}",
            "-" if n.get("current_load") is None else f"{n['current_load']:.2f}",
            n.get("uptime") or "-", n["url"],
        )
    Console().print(table)
