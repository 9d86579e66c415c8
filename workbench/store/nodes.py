"""Registered compute nodes (Jupyter Servers) in the store.

A mixin of :class:`workbench.store.Store` (it uses the store's ``_tx``/``_read`` helpers), so
callers write ``store.create_node(...)`` like every other store method. Only what the API may
show is kept here; a node's token never enters the database (see ``workbench.nodes.tokens``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import duckdb

from workbench.store.times import aware_opt, to_db_opt, utcnow

NODE_STATUSES = ("online", "offline", "busy")

_COLUMNS = (
    "node_id, name, url, region, status, capabilities, gpu_info, cpu_count, torch_version, "
    "workbench_version, server_version, performance_score, current_load, server_started_at, "
    "last_seen, last_error, registered_at, updated_at"
)
# Columns ``update_node`` may change (JSON ones are serialised, times made naive UTC).
_UPDATABLE = frozenset(_COLUMNS.replace(" ", "").split(",")) - {"node_id", "registered_at"}
_JSON = frozenset({"capabilities", "gpu_info"})
_TIMES = frozenset({"server_started_at", "last_seen", "updated_at"})


@dataclass(frozen=True)
class NodeRecord:
    node_id: str
    name: str
    url: str
    region: str | None
    status: str  # online | offline | busy
    capabilities: list[str] = field(default_factory=list)
    gpu_info: dict[str, Any] | None = None  # {"model", "memory", "compute_capability"}
    cpu_count: int | None = None
    torch_version: str | None = None
    workbench_version: str | None = None
    server_version: str | None = None
    performance_score: float | None = None  # measured float32 matmul TFLOPS on the node
    current_load: float | None = None
    server_started_at: datetime | None = None
    last_seen: datetime | None = None
    last_error: str | None = None
    registered_at: datetime | None = None
    updated_at: datetime | None = None

    def uptime_seconds(self, now: datetime | None = None) -> float | None:
        """Seconds since the node's server started (None while offline or unknown)."""
        if self.server_started_at is None or self.status == "offline":
            return None
        now = now or datetime.now(timezone.utc)
        return max(0.0, (now - self.server_started_at).total_seconds())


class NodesMixin:
    """Keyword-only node methods of ``Store``."""

    if TYPE_CHECKING:  # provided by Store
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    @staticmethod
    def _node(row: tuple) -> NodeRecord:
        values = dict(zip(_COLUMNS.replace(" ", "").split(","), row))
        for name in _JSON:
            values[name] = json.loads(values[name]) if values[name] is not None else None
        values["capabilities"] = values["capabilities"] or []
        for name in (*_TIMES, "registered_at"):
            values[name] = aware_opt(values[name])
        return NodeRecord(**values)

    def create_node(
        self, *, url: str, name: str | None = None, region: str | None = None,
        status: str = "online", **fields: Any,
    ) -> NodeRecord:
        """Store a node (ValueError if that url is registered already)."""
        if status not in NODE_STATUSES:
            raise ValueError(f"status must be one of {NODE_STATUSES}, got {status!r}")
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"unknown node fields: {sorted(unknown)}")
        node_id = "node_" + uuid4().hex[:12]
        now = utcnow()
        values: dict[str, Any] = {
            "node_id": node_id, "name": name or node_id, "url": url, "region": region,
            "status": status, "capabilities": [], "registered_at": now, "updated_at": now,
            **fields,
        }
        columns = list(values)
        with self._tx() as con:
            if con.execute("SELECT 1 FROM nodes WHERE url = ?", [url]).fetchone():
                raise ValueError(f"a node with url {url} is already registered")
            con.execute(
                f"INSERT INTO nodes ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)})",
                [_db_value(c, values[c]) for c in columns],
            )
            row = con.execute(f"SELECT {_COLUMNS} FROM nodes WHERE node_id = ?", [node_id]).fetchone()
        assert row is not None
        return self._node(row)

    def get_node(self, node_id: str) -> NodeRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM nodes WHERE node_id = ?", [node_id])
        return self._node(rows[0]) if rows else None

    def find_node(self, *, url: str) -> NodeRecord | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM nodes WHERE url = ?", [url])
        return self._node(rows[0]) if rows else None

    @staticmethod
    def _node_filters(status: str | None, region: str | None) -> tuple[str, list[Any]]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if region is not None:
            where.append("region = ?")
            params.append(region)
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def list_nodes(
        self, *, status: str | None = None, region: str | None = None,
        limit: int = 50, offset: int = 0,
    ) -> list[NodeRecord]:
        """Oldest registration first."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        where, params = self._node_filters(status, region)
        rows = self._read(
            f"SELECT {_COLUMNS} FROM nodes{where} ORDER BY registered_at, node_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [self._node(r) for r in rows]

    def count_nodes(self, *, status: str | None = None, region: str | None = None) -> int:
        where, params = self._node_filters(status, region)
        return int(self._read(f"SELECT count(*) FROM nodes{where}", params)[0][0])

    def update_node(self, node_id: str, **fields: Any) -> NodeRecord | None:
        """Change some fields; returns the updated node (None if there is no such node)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"unknown node fields: {sorted(unknown)}")
        if "status" in fields and fields["status"] not in NODE_STATUSES:
            raise ValueError(f"status must be one of {NODE_STATUSES}, got {fields['status']!r}")
        fields = {**fields, "updated_at": utcnow()}
        sets = ", ".join(f"{c} = ?" for c in fields)
        with self._tx() as con:
            row = con.execute(
                f"UPDATE nodes SET {sets} WHERE node_id = ? RETURNING {_COLUMNS}",
                [*(_db_value(c, v) for c, v in fields.items()), node_id],
            ).fetchone()
        return self._node(row) if row else None

    def delete_node(self, node_id: str) -> bool:
        with self._tx() as con:
            row = con.execute(
                "DELETE FROM nodes WHERE node_id = ? RETURNING node_id", [node_id]
            ).fetchone()
        return row is not None


def _db_value(column: str, value: Any) -> Any:
    if column in _JSON:
        return None if value is None else json.dumps(value)
    if column in _TIMES or column == "registered_at":
        return to_db_opt(value)
    return value
