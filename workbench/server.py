"""The composition root: one process that owns a store and serves every face from it.

    workbench serve                 # http://127.0.0.1:8765 : the app at /, REST at /api
    workbench serve --on-demand     # what the front door starts: a private Unix socket, idle exit

It assembles what the faces never import from each other: the REST API (``workbench.api``),
the Panel app (``workbench.ui``), the compute targets, and the owner file through which the
CLI, notebooks and Jupyter find this process (``workbench.frontdoor``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import __version__
from .config import OWNER_TIER, get_settings
from .frontdoor.owner_file import OwnerInfo, private_home, read_owner, remove_owner, write_owner

log = logging.getLogger(__name__)

LOCAL_KEY_PREFIX = "local:"


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    uds: str | None = None
    workers: int | None = None
    log_level: str = "warning"
    trainer_open: bool = False
    on_demand: bool = False
    idle_s: float | None = None


def build_app(service: Any, *, close_service: bool = True, with_ui: bool = True) -> Any:
    """REST API + websockets + the Panel app on one FastAPI app, over ``service``."""
    from .api import create_app

    app = create_app(service, close_service=close_service)
    if with_ui:
        from .ui.server import mount

        mount(app, service)
    return app


def open_service(workers: int | None = None) -> Any:
    """Open this home's store as its owner; runs a dead owner left running are failed with a
    reason that names it."""
    from .service import Workbench
    from .store import Store

    private_home()
    previous = read_owner()
    reason = previous.describe() if previous is not None else None
    store = Store(recovery_reason=reason)
    with contextlib.suppress(OSError):
        os.chmod(store.path, 0o600)
    return Workbench(store, max_workers=workers)


class ActivityTracker:
    """Last request time and open websockets, for an on-demand owner's idle exit (ASGI)."""

    def __init__(self, app: Any):
        self.app = app
        self.last = time.monotonic()
        self.open_sockets = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self.last = time.monotonic()
        websocket = scope["type"] == "websocket"
        self.open_sockets += websocket
        try:
            await self.app(scope, receive, send)
        finally:
            self.open_sockets -= websocket
            self.last = time.monotonic()


def publish(app: Any, url: str, *, on_demand: bool, uds: str | None = None) -> Any:
    """Publish this process as the home's owner with a fresh local admin credential. Returns
    the (idempotent) undo: revoke the credential, remove the owner file. The undo runs at the
    app's shutdown, while the store is still open -- uvicorn re-raises SIGTERM after serving,
    so code after ``server.run()`` would not run on ``workbench stop``."""
    keyring = app.state.keyring
    for record in keyring.store.list_api_keys(include_revoked=False):
        if record.name.startswith(LOCAL_KEY_PREFIX):  # left by an owner that died
            keyring.revoke(record.key_id)
    # The owner tier: faces using this credential (CLI, notebooks, the tile) are not throttled.
    token, record = keyring.create(name=f"{LOCAL_KEY_PREFIX}{os.getpid()}", permissions="admin",
                                   rate_tier=OWNER_TIER)
    write_owner(OwnerInfo(url=url, pid=os.getpid(), token=token, started_at=time.time(),
                          on_demand=on_demand, version=__version__))
    done = threading.Event()

    def unpublish() -> None:
        if done.is_set():
            return
        done.set()
        remove_owner(os.getpid())
        with contextlib.suppress(Exception):
            keyring.revoke(record.key_id)
        if uds:
            with contextlib.suppress(OSError):
                os.unlink(uds)

    original = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app: Any) -> Any:
        async with original(asgi_app) as value:
            try:
                yield value
            finally:
                unpublish()  # before the service (and its store) closes

    app.router.lifespan_context = lifespan
    return unpublish


def _idle_watch(server: Any, service: Any, tracker: ActivityTracker, idle_s: float) -> None:
    """Stop an on-demand owner after ``idle_s`` with no request, socket or run."""
    while not server.should_exit:
        time.sleep(min(5.0, idle_s / 4))
        busy = tracker.open_sockets > 0 or service.active_run_count() > 0
        if busy:
            tracker.last = time.monotonic()
        elif time.monotonic() - tracker.last > idle_s:
            log.warning("workbench: no activity for %.0f s; the on-demand owner stops", idle_s)
            server.should_exit = True


def serve(options: ServeOptions) -> int:
    """Run the owner until stopped (SIGINT/SIGTERM, or idle exit when on demand)."""
    import sys

    import torch
    import uvicorn

    service = open_service(options.workers)
    app = build_app(service, close_service=True)
    # The server's own torch work is small-batch inference; intra-op threads would only fight
    # the training workers for cores (on 2 busy cores they make a 512 batch ~7x slower).
    torch.set_num_threads(1)
    app.state.trainer_open = options.trainer_open  # loopback may use the trainer API tokenless
    if options.on_demand and app.state.generated_key:
        # Nobody reads an on-demand owner's output: a key printed there would only sit in a
        # log file. Faces use the owner's local credential; `workbench keys create` makes keys.
        keyring = app.state.keyring
        for record in keyring.store.list_api_keys(include_revoked=False):
            if record.name == "bootstrap-admin":
                keyring.revoke(record.key_id)
        app.state.generated_key = None
    if app.state.generated_key:
        print("workbench serve: generated the admin API key (shown only this once; the store "
              f"keeps only its hash):\n  {app.state.generated_key}", file=sys.stderr)
    url = f"unix:{options.uds}" if options.uds else f"http://{options.host}:{options.port}"
    print(f"workbench serve: {url}/api  (explorer: /api/explorer); owner of {get_settings().home}",
          file=sys.stderr, flush=True)
    if not options.uds and (app_key := app.state.generated_key):
        # The app's login link (Jupyter-style): opens the app and sets its login cookie. Only
        # for a key generated now: a WORKBENCH_TOKEN is the operator's and never printed.
        print(f"workbench serve: the app: http://{options.host}:{options.port}/?token={app_key}",
              file=sys.stderr, flush=True)
    tracker = ActivityTracker(app)
    # The imports (torch, Panel, Bokeh, DuckDB) leave ~430k objects that live as long as the
    # process; a full collection scanning them stalled every request for ~0.4 s. Frozen, the
    # collector skips them.
    gc.collect()
    gc.freeze()
    where: dict[str, Any] = {"uds": options.uds} if options.uds else \
        {"host": options.host, "port": options.port}
    if options.uds:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(options.uds)  # left by an owner that was killed
    config = uvicorn.Config(tracker, **where, log_level=options.log_level, access_log=False,
                            lifespan="on")
    server = uvicorn.Server(config)
    unpublish = publish(app, url, on_demand=options.on_demand, uds=options.uds)
    try:
        if options.on_demand:
            idle = options.idle_s or get_settings().owner_idle_s
            threading.Thread(target=_idle_watch, args=(server, service, tracker, idle),
                             daemon=True, name="owner-idle").start()
        if options.uds:
            _chmod_when_bound(options.uds)
        server.run()
    finally:
        unpublish()
    return 0


def _chmod_when_bound(path: str) -> None:
    """The Unix socket is this user's only (uvicorn creates it with the umask's mode)."""

    def chmod() -> None:
        for _ in range(600):
            if os.path.exists(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o600)
                return
            time.sleep(0.1)

    threading.Thread(target=chmod, daemon=True).start()
