"""Persisted ``/api/v1`` deployments: which trained job is served, with which configuration.

    deployments = Deployments(store)
    record = deployments.create(job_id="job_...", param_id="p_...", config={...})
    deployments.active()                       # not deleted, oldest first
    deployments.delete(deployment_id=record.deployment_id)

The table comes from migration step 5 (``workbench.store.migrations``). Only what survives a
restart is kept here; whether a deployment is loaded and serving is the API process's state.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workbench.store.duck import Store
from workbench.store.times import aware, aware_opt, utcnow

_COLUMNS = "deployment_id, job_id, param_id, config, created_at, deleted_at"


@dataclass(frozen=True)
class DeploymentRecord:
    deployment_id: str
    job_id: str
    param_id: str
    config: dict[str, Any]  # {"deployment_config": {...}, "serving_config": {...}}
    created_at: datetime
    deleted_at: datetime | None


class Deployments:
    """Keyword-only queries and updates over the deployments table of one :class:`Store`."""

    def __init__(self, store: Store):
        self.store = store

    @staticmethod
    def _record(row: tuple) -> DeploymentRecord:
        return DeploymentRecord(row[0], row[1], row[2], json.loads(row[3]), aware(row[4]),
                                aware_opt(row[5]))

    def create(self, *, job_id: str, param_id: str, config: dict[str, Any]) -> DeploymentRecord:
        deployment_id = "deploy_" + uuid.uuid4().hex
        with self.store._tx() as con:
            con.execute(f"INSERT INTO deployments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
                        [deployment_id, job_id, param_id, json.dumps(config), utcnow()])
        found = self.get(deployment_id=deployment_id)
        assert found is not None
        return found

    def get(self, *, deployment_id: str) -> DeploymentRecord | None:
        rows = self.store._read(f"SELECT {_COLUMNS} FROM deployments WHERE deployment_id = ? "
                                "AND deleted_at IS NULL", [deployment_id])
        return self._record(rows[0]) if rows else None

    def active(self) -> list[DeploymentRecord]:
        rows = self.store._read(f"SELECT {_COLUMNS} FROM deployments WHERE deleted_at IS NULL "
                                "ORDER BY created_at, deployment_id")
        return [self._record(r) for r in rows]

    def delete(self, *, deployment_id: str) -> bool:
        with self.store._tx() as con:
            row = con.execute("UPDATE deployments SET deleted_at = ? WHERE deployment_id = ? AND "
                              "deleted_at IS NULL RETURNING deployment_id",
                              [utcnow(), deployment_id]).fetchone()
        return row is not None
