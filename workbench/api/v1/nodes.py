"""Nodes (neurogrid): registered Jupyter Servers that runs can target by id.

``POST /api/v1/nodes`` registers one (probing it: a refused token is 422 on ``token``, a server
that does not answer is 502 NODE_UNAVAILABLE), ``GET /nodes`` lists them (``status``, ``region``
filters; ``page``/``limit`` or ``offset``/``limit``; sort; fields), ``GET /nodes/{id}``,
``POST /nodes/{id}/check`` re-checks health now, ``DELETE /nodes/{id}`` forgets one. Tokens are
accepted, never returned.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from ...executors.registry import install
from ...nodes import (
    NodeAuthError,
    NodeCreate,
    NodeError,
    NodePublic,
    NodeRegistry,
    UnknownNode,
    node_public,
)
from ...store import NODE_STATUSES, NodeRecord, RunRecord
from ...store.usage import node_owner, set_node_owner
from ..deps import ServiceDep
from .conventions import (
    CONFLICT,
    ID_ERRORS,
    NODE_UNAVAILABLE,
    READ_ERRORS,
    ApiError,
    Envelope,
    ErrorEnvelope,
    not_found,
    ok,
    validation_error,
)
from .query import ListQuery, ListSpec, equals, list_query_dependency, paginate
from .security import AdminKey, ReadKey
from .tasks import all_runs
from .views import earnings

router = APIRouter(prefix="/nodes", tags=["nodes"])
log = logging.getLogger(__name__)

LIST_SPEC = ListSpec(
    fields=(*NodePublic.model_fields, "owner", "earnings"),
    sortable=("registered_at", "name", "status", "region", "performance_score",
              "current_load", "last_seen", "id"),
    filters={
        "status": equals("status", allowed=NODE_STATUSES),
        "region": equals("region"),
        "offset": lambda raw: (lambda item: True),  # applied by list_nodes itself
    },
    default_sort=("registered_at", False),
)

_REGISTER_ERRORS: dict[int | str, dict[str, Any]] = {
    **ID_ERRORS,
    409: {"model": ErrorEnvelope, "description": "that url is registered already"},
    502: {"model": ErrorEnvelope, "description": "NODE_UNAVAILABLE: the server did not answer "
          "or could not run the capability probe"},
}


def _nodes(service: Any) -> NodeRegistry:
    nodes = install(service).nodes
    assert nodes is not None
    return nodes


def _view(service: Any, nodes: NodeRegistry, node: NodeRecord,
          runs: list[RunRecord] | None = None) -> dict[str, Any]:
    """The node as ``NodePublic`` plus the neurogrid detail's ``owner`` (the key that
    registered it) and ``earnings`` (``views.earnings``: the cost of the tasks it ran)."""
    view = node_public(node, tasks_completed=nodes.tasks_completed(node.node_id)).model_dump(
        mode="json")
    runs = list(all_runs(service)) if runs is None else runs
    return {**view, "owner": node_owner(nodes.store, node.node_id),
            "earnings": earnings(runs, node.node_id)}


def _get(nodes: NodeRegistry, node_id: str) -> NodeRecord:
    try:
        return nodes.get(node_id)
    except UnknownNode:
        raise not_found("node", node_id, "node_id") from None


@router.post("", response_model=Envelope[NodePublic], status_code=201,
             responses=_REGISTER_ERRORS)
def register_node(body: NodeCreate, service: ServiceDep, key: AdminKey) -> Response:
    """Register a Jupyter Server: checks the token and probes GPU, CPUs, torch and a measured
    matmul TFLOPS score on the node itself (takes a few seconds)."""
    nodes = _nodes(service)
    try:
        node = nodes.register(body.url, body.token, name=body.name, region=body.region)
    except NodeAuthError as exc:
        raise validation_error("token", str(exc)) from None
    except NodeError as exc:  # unreachable, or not a Jupyter Server that can run the probe
        # One message for refused / timeout / an HTTP error / a failed probe: what answered
        # (or did not) at that address is logged here, never echoed to the caller.
        log.info("registering node %s failed: %s", body.url, exc)
        raise ApiError(502, NODE_UNAVAILABLE, f"could not register {body.url}: no Jupyter "
                       "Server that can run the capability probe answered there",
                       field="url") from None
    except ValueError as exc:
        message = str(exc)
        if "already registered" in message:
            raise ApiError(409, CONFLICT, message, field="url") from None
        field = "token" if message.startswith("token") else "url"
        raise validation_error(field, message) from None
    set_node_owner(service.store, node.node_id, key.key_id)
    return ok(_view(service, nodes, node), status_code=201)


class NodeList(BaseModel):
    nodes: list[NodePublic]
    total: int
    limit: int
    offset: int


NodeListQuery = Annotated[ListQuery, Depends(list_query_dependency(50))]


@router.get("", response_model=Envelope[NodeList], responses=READ_ERRORS)
def list_nodes(
    service: ServiceDep, query: NodeListQuery, _: ReadKey,
    status: Annotated[str | None, Query(description="online, busy or offline "
                                        "(comma-separated)")] = None,
    region: Annotated[str | None, Query(max_length=100)] = None,
    offset: Annotated[int | None, Query(ge=0, le=1_000_000, description="skip this many "
                                        "(instead of page)")] = None,
) -> Response:
    """Registered nodes, oldest registration first by default, as the neurogrid document shows
    them: ``data {nodes, total, limit (default 50), offset}`` (also ``meta.pagination``)."""
    nodes = _nodes(service)
    runs = list(all_runs(service))
    views = [_view(service, nodes, n, runs) for n in nodes.store.list_nodes(limit=100_000)]
    if offset is not None and query.page != 1:
        raise validation_error("offset", "give page or offset, not both")
    skip = (query.page - 1) * query.limit if offset is None else offset
    widened = ListQuery(1, skip + query.limit, query.sort, query.fields, query.params)
    page, meta = paginate(views, widened, LIST_SPEC)
    total = meta["pagination"]["total"]
    meta["pagination"] = {"total": total, "limit": query.limit, "offset": skip,
                          "page": skip // query.limit + 1,
                          "pages": -(-total // query.limit) if total else 0}
    return ok({"nodes": page[skip:], "total": total, "limit": query.limit, "offset": skip},
              meta=meta)


@router.get("/{node_id}", response_model=Envelope[NodePublic], responses=ID_ERRORS)
def get_node(node_id: str, service: ServiceDep, _: ReadKey) -> Response:
    """One node, with uptime and tasks completed."""
    nodes = _nodes(service)
    return ok(_view(service, nodes, _get(nodes, node_id)))


@router.post("/{node_id}/check", response_model=Envelope[NodePublic], responses=ID_ERRORS)
def check_node(node_id: str, service: ServiceDep, _: ReadKey) -> Response:
    """Health-check the node now (status, last_seen, current_load, uptime)."""
    nodes = _nodes(service)
    _get(nodes, node_id)
    return ok(_view(service, nodes, nodes.check(node_id)))


@router.delete("/{node_id}", response_model=Envelope[NodePublic], responses=ID_ERRORS)
def remove_node(node_id: str, service: ServiceDep, _: AdminKey) -> Response:
    """Forget a node and its token; runs still executing there are cancelled."""
    nodes = _nodes(service)
    view = _view(service, nodes, _get(nodes, node_id))
    nodes.remove(node_id)
    return ok({**view, "status": "removed"})
