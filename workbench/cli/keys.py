"""``workbench keys create | list | revoke``: API keys, through the front door.

The secret of a new key is printed once (the store keeps only its hash); ``list`` shows ids,
names, scopes, expiry and last use, never secrets. Needs an admin key -- the front door's
local credential is one.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .output import fail, print_table
from .training import _connect


def cmd_keys(args: argparse.Namespace) -> int:
    from ..client import ApiError

    client = _connect()
    try:
        if args.keys_command == "create":
            body: dict[str, Any] = {"name": args.name, "permissions": args.scopes.split(",")}
            if args.expires_at:
                body["expires_at"] = args.expires_at
            created = client.v1("POST", "/auth/keys", json=body)
            if args.json:
                print(json.dumps(created, indent=2))
            else:
                print(f"created key {created['key_id']} ({', '.join(created['permissions'])}); "
                      "its secret, shown only this once:")
                print(f"  {created['key']}")
            return 0
        if args.keys_command == "revoke":
            revoked = client.v1("DELETE", f"/auth/keys/{args.key_id}")
            print(f"revoked {revoked['key_id']}")
            return 0
        keys = client.v1_all("/auth/keys")
    except ApiError as exc:
        return fail("keys", exc.detail)
    if args.json:
        print(json.dumps(keys, indent=2))
        return 0
    print_table(("id", "name", "scopes", "status", "created", "expires", "last used"), [
        (k["key_id"], k["name"], ",".join(k["permissions"]), k["status"],
         _day(k.get("created_at")), _day(k.get("expires_at")), _day(k.get("last_used_at")))
        for k in keys])
    return 0


def _day(value: str | None) -> str:
    return (value or "-")[:19].replace("T", " ")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys")
    keys = p.add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--scopes", default="read",
                        help="comma-separated: read, train, admin (default: read)")
    create.add_argument("--expires-at", help="ISO 8601 time, e.g. 2027-01-31T00:00:00Z")
    create.add_argument("--json", action="store_true", help="print the key (and secret) as JSON")
    ls = keys.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true", help="print keys as JSON")
    revoke = keys.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", help="the key's id, as `workbench keys list` shows it")
    for q in (create, ls, revoke):
        q.set_defaults(func=cmd_keys)
