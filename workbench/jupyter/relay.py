"""Relay a Unix socket to the store's owner: Jupyter's proxy attaches, never opens the store.

    python -m workbench.jupyter.relay --uds /tmp/jupyter-server-proxy-x/socket --owner
    python -m workbench.jupyter.relay --uds ... --to http://127.0.0.1:8765

jupyter-server-proxy spawns this for the launcher tile (see :mod:`workbench.jupyter.proxy`).
With ``--owner`` each connection goes to this home's owner as the front door finds it (starting
one on demand, finding a restarted one again); ``--to`` relays to a fixed server. Every
connection is copied byte for byte in both directions, so HTTP, keep-alive and websocket
upgrades all pass unchanged; Jupyter's proxy has already checked the user and added the API
key header.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from ..frontdoor.owner_file import UNIX_PREFIX

log = logging.getLogger(__name__)
CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the other side went away: closing below ends the peer pipe too
    finally:
        with contextlib.suppress(Exception):
            writer.close()


def _connector(url: str) -> Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """How to open one upstream connection: ``unix:/socket`` or ``http(s)://host:port``."""
    if url.startswith(UNIX_PREFIX):
        path = url[len(UNIX_PREFIX):]
        return lambda: asyncio.open_unix_connection(path)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--to must be an http(s) URL or unix:/path, got {url!r}")
    secure = parts.scheme == "https"
    host, port = parts.hostname, parts.port or (443 if secure else 80)
    tls = ssl.create_default_context() if secure else None
    return lambda: asyncio.open_connection(host, port, ssl=tls)


def _owner_url() -> str:
    from ..frontdoor import find_owner

    return find_owner(quiet=True).url


async def serve(uds: str, url: str | None = None, *, ready: asyncio.Event | None = None) -> None:
    """Accept on ``uds`` until cancelled, relaying each connection to ``url`` (None: to this
    home's owner, looked up per connection)."""
    fixed = _connector(url) if url else None

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        target = url or "the workbench owner"
        try:
            if fixed is not None:
                up_r, up_w = await fixed()
            else:
                target = await asyncio.get_running_loop().run_in_executor(None, _owner_url)
                up_r, up_w = await _connector(target)()
        except (OSError, RuntimeError) as exc:  # RuntimeError: OwnerUnavailable
            log.warning("workbench relay: %s is unreachable: %s", target, exc)
            body = f"{target} is unreachable: {exc}\n".encode()
            client_w.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                           b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            with contextlib.suppress(Exception):
                await client_w.drain()
                client_w.close()
            return
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    server = await asyncio.start_unix_server(handle, path=uds)
    os.chmod(uds, 0o600)  # only this user; the folder is private already
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.jupyter.relay",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--uds", required=True, help="Unix socket path to listen on")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", help="a running workbench server: http://host:port or unix:/path")
    where.add_argument("--owner", action="store_true",
                       help="this home's owner (found per connection, started on demand)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(args.uds, None if args.owner else args.to))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
    with contextlib.suppress(OSError):
        os.unlink(args.uds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
