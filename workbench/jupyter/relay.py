"""Relay a Unix socket to a running ``workbench serve``: Jupyter's proxy attaches, never reopens.

    python -m workbench.jupyter.relay --uds /tmp/jupyter-server-proxy-x/socket --to http://127.0.0.1:8765

jupyter-server-proxy spawns this when a workbench server already owns the store (see
:mod:`workbench.jupyter.proxy`). Every connection is copied byte for byte in both directions,
so HTTP, keep-alive and websocket upgrades all pass unchanged; Jupyter's proxy has already
checked the user and added the API key header.
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

from .discovery import UNIX_PREFIX

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


async def serve(uds: str, url: str, *, ready: asyncio.Event | None = None) -> None:
    """Accept on ``uds`` until cancelled, relaying each connection to ``url``."""
    connect = _connector(url)

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await connect()
        except OSError as exc:
            log.warning("workbench relay: %s is unreachable: %s", url, exc)
            body = f"the workbench server at {url} is unreachable: {exc}\n".encode()
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
    parser.add_argument("--to", required=True,
                        help="the running workbench server: http://host:port or unix:/path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    loop = asyncio.new_event_loop()
    task = loop.create_task(serve(args.uds, args.to))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
    with contextlib.suppress(OSError):
        os.unlink(args.uds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
