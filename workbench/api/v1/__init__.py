"""The native API, ``/api/v1``: Cortex jobs, deployments and fine-tuning, neurogrid tasks and
analytics, API keys with scopes and rate limits, a websocket, under the Cortex conventions
(envelopes, error codes, pagination/filter/sort/fields).

    app = create_app()       # workbench.api.app calls mount_v1(app, service)

``mount_v1`` adds the routers, the envelope error handlers (scoped to ``/api/v1``: the MNIST
MLP API under ``/api`` keeps its own shapes), the rate limiter (its middleware,
``security.RateLimitMiddleware``, covers all of ``/api`` and is added by the app) and the
offline API explorer at ``/api/explorer``. Call it after the app's own exception handlers are installed.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, FastAPI

from ...executors.registry import install as install_targets
from ...service import Workbench
from ...service.webhooks import WebhookDispatcher
from . import (
    analytics,
    conventions,
    datasets,
    experiments,
    explorer,
    jobs,
    keys,
    models,
    networks,
    nodes,
    plugin_core,
    sql,
    sweeps,
    tasks,
    webhooks,
    ws,
)
from .conventions import PLUGIN_CORE_PREFIX, PREFIX
from .security import RateLimiter

__all__ = ["PREFIX", "mount_v1"]


def mount_v1(app: FastAPI, service: Workbench, *, rate_limit_per_minute: int | None = None,
             allowed_origins: Iterable[str] = ()) -> None:
    """Add ``/api/v1`` to ``app`` (whose ``state.keyring`` authenticates keys).
    ``rate_limit_per_minute`` fixes one limit for every key (0: none); by default each key has
    its tier's (``settings.rate_limits``, applied by ``RateLimitMiddleware`` on all of ``/api``,
    which ``workbench.api.app`` adds)."""
    app.state.v1_limiter = RateLimiter(rate_limit_per_minute)
    app.state.v1_deployments = models.DeploymentRegistry(service)  # persisted; reloaded
    app.state.v1_allowed_origins = frozenset(allowed_origins)
    if not hasattr(app.state, "service"):
        app.state.service = service

    app.state.webhooks = WebhookDispatcher(service)  # follows service.bus; closed on shutdown

    v1 = APIRouter(prefix=PREFIX)
    for module in (keys, jobs, plugin_core, models, networks, datasets, tasks, analytics, ws,
                   nodes, sql, sweeps, experiments):
        v1.include_router(module.router)
    app.include_router(v1)
    # The conventions' namespaces, at /api/plugin-core and (versioned) /api/v1/plugin-core.
    for prefix in (PLUGIN_CORE_PREFIX, PREFIX + "/plugin-core"):
        core = APIRouter(prefix=prefix)
        for module in (plugin_core, webhooks):
            core.include_router(module.router)
        app.include_router(core)
    # start_run(target="local-kernel" | node id); node health checks; node.status on the bus
    install_targets(service, monitor_interval=30.0)

    # Our explorer works offline; FastAPI's Swagger UI (if mounted there) needs a CDN.
    app.router.routes[:] = [r for r in app.router.routes
                            if getattr(r, "path", None) != "/api/explorer"]
    app.include_router(explorer.router)
    conventions.install(app)
