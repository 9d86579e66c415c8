"""The Cortex conventions' namespaces: jobs, providers and networks under
``/api/plugin-core/...`` (and ``/api/v1/plugin-core/...``, the conventions' versioned form).

- ``GET /jobs`` (also ``GET /api/v1/jobs``): every run as a Cortex job, with the conventions'
  paging (``page``, ``limit``), filters (``status``, ``provider``, ``model``), sorting
  (``sort=createdAt:desc``) and field selection (``fields=id,status,createdAt``).
- ``GET /providers``: where jobs can run -- this machine (subprocess, Jupyter kernel,
  torch.distributed ranks) and every registered node (``workbench.executors.registry``).
- ``GET /networks``: the compute network's members: registered nodes and the
  ``workbench worker`` devices registered with distributed-trainer jobs.

Webhooks (``/webhooks``) live in ``workbench.api.v1.webhooks``. Same envelope and error codes as
``/api/v1`` (``conventions.is_v1_path`` covers ``/api/plugin-core``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ...executors.registry import install
from ...store.jobs import TrainerJobs
from ..deps import ServiceDep
from .conventions import READ_ERRORS, Envelope, ok
from .query import ListQueryDep, ListSpec, equals, paginate
from .security import ReadKey
from .tasks import all_runs
from .views import JOB_STATUS, iso, job_id, task_cost

router = APIRouter(tags=["plugin-core"])

JOB_STATUSES = tuple(dict.fromkeys(JOB_STATUS.values()))
# The conventions' example filters ``status=running``: task and run words name job statuses too.
JOB_STATUS_ALIASES = {"running": ("training",), "pending": ("submitted",),
                      "queued": ("submitted",), "succeeded": ("completed",)}
JOB_FIELDS = ("id", "job_id", "status", "provider", "model_id", "dataset", "epoch",
              "epochs_total", "metrics", "error", "cost", "created_at", "updated_at",
              "completed_at")

JOB_SPEC = ListSpec(
    fields=JOB_FIELDS,
    sortable=("created_at", "updated_at", "completed_at", "status", "provider", "id", "cost"),
    filters={
        "status": equals("status", aliases=JOB_STATUS_ALIASES,
                         allowed=(*JOB_STATUSES, *JOB_STATUS_ALIASES)),
        "provider": equals("provider"),
        "model": equals("model_id", param="model"),
    },
)


def job_view(run: Any) -> dict[str, Any]:
    public = job_id(run.run_id)
    return {"id": public, "job_id": public, "status": JOB_STATUS.get(run.state, run.state),
            "provider": run.target, "model_id": run.model_id, "dataset": run.dataset,
            "epoch": run.epoch, "epochs_total": run.epochs_total, "metrics": run.metrics,
            "error": run.error, "cost": task_cost(run), "created_at": iso(run.created_at),
            "updated_at": iso(run.updated_at), "completed_at": iso(run.finished_at)}


@router.get("/jobs", response_model=Envelope[list[dict[str, Any]]], responses=READ_ERRORS)
def list_jobs(
    service: ServiceDep, query: ListQueryDep, _: ReadKey,
    status: Annotated[str | None, Query(max_length=200, description=", ".join(JOB_STATUSES))
                      ] = None,
    provider: Annotated[str | None, Query(max_length=200, description="where it ran: local, "
                                          "local-kernel, distributed, ray or a node id")] = None,
    model: Annotated[str | None, Query(max_length=200, description="model id")] = None,
) -> Response:
    """Jobs, newest first by default (``data`` is the page, ``meta.pagination`` the paging)."""
    page, meta = paginate((job_view(r) for r in all_runs(service)), query, JOB_SPEC)
    return ok(page, meta=meta)


@router.get("/providers", response_model=Envelope[list[dict[str, Any]]], responses=READ_ERRORS)
def list_providers(service: ServiceDep, _: ReadKey) -> Response:
    """Compute providers: this machine's targets and every registered node."""
    providers = [{"id": t["target"], "kind": t["kind"], "name": t["label"],
                  "status": t["status"], "gpu": t["gpu"]} for t in install(service).describe()]
    return ok(providers, meta={"total": len(providers)})


@router.get("/networks", response_model=Envelope[list[dict[str, Any]]], responses=READ_ERRORS)
def list_networks(service: ServiceDep, _: ReadKey) -> Response:
    """Members of the compute network: nodes (Jupyter Servers) and trainer workers."""
    members: list[dict[str, Any]] = []
    for node in service.store.list_nodes(limit=10_000):
        members.append({"id": node.node_id, "type": "node", "name": node.name,
                        "address": node.url, "status": node.status, "region": node.region,
                        "last_seen": iso(node.last_seen), "job_id": None})
    for device in TrainerJobs(service.store).list_devices():
        members.append({"id": f"worker_{device.device_id}", "type": "worker",
                        "name": f"{device.ip}:{device.port}",
                        "address": f"http://{device.ip}:{device.port}",
                        "status": "registered", "region": None,
                        "last_seen": iso(device.registered_at), "job_id": device.job_id})
    return ok(members, meta={"total": len(members)})
