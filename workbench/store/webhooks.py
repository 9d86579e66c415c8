"""Webhook subscriptions and their deliveries (tables from migration step 5).

    hooks = Webhooks(store)
    hook = hooks.create(url="https://ci.example.org/hook", events=["job.completed"], key_id=...)
    delivery = hooks.add_delivery(webhook_id=hook.webhook_id, event_type=..., payload={...})
    hooks.update_delivery(delivery_id=..., status="delivered", attempts=1, last_status=200)

Signing secrets are not kept here (the database can be queried and copied): see
``workbench.api.v1.webhooks``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from workbench.store.duck import Store
from workbench.store.times import aware, aware_opt, utcnow

_HOOK_COLUMNS = "webhook_id, url, events, key_id, created_at, deleted_at"
_DELIVERY_COLUMNS = ("delivery_id, webhook_id, event_type, payload, status, attempts, "
                     "last_status, last_error, created_at, delivered_at")


@dataclass(frozen=True)
class WebhookRecord:
    webhook_id: str
    url: str
    events: list[str]
    key_id: str | None
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True)
class DeliveryRecord:
    delivery_id: str
    webhook_id: str
    event_type: str
    payload: dict[str, Any]
    status: str  # pending | delivered | failed
    attempts: int
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class Webhooks:
    """Keyword-only queries and updates over the webhook tables of one :class:`Store`."""

    def __init__(self, store: Store):
        self.store = store

    @staticmethod
    def _hook(row: tuple) -> WebhookRecord:
        return WebhookRecord(row[0], row[1], json.loads(row[2]), row[3], aware(row[4]),
                             aware_opt(row[5]))

    @staticmethod
    def _delivery(row: tuple) -> DeliveryRecord:
        return DeliveryRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5],
                              row[6], row[7], aware(row[8]), aware_opt(row[9]))

    def create(self, *, url: str, events: list[str], key_id: str | None) -> WebhookRecord:
        webhook_id = "wh_" + uuid.uuid4().hex
        with self.store._tx() as con:
            con.execute(f"INSERT INTO webhooks ({_HOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
                        [webhook_id, url, json.dumps(events), key_id, utcnow()])
        found = self.get(webhook_id=webhook_id)
        assert found is not None
        return found

    def get(self, *, webhook_id: str) -> WebhookRecord | None:
        rows = self.store._read(f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE webhook_id = ? "
                                "AND deleted_at IS NULL", [webhook_id])
        return self._hook(rows[0]) if rows else None

    def active(self) -> list[WebhookRecord]:
        rows = self.store._read(f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL "
                                "ORDER BY created_at, webhook_id")
        return [self._hook(r) for r in rows]

    def delete(self, *, webhook_id: str) -> bool:
        with self.store._tx() as con:
            row = con.execute("UPDATE webhooks SET deleted_at = ? WHERE webhook_id = ? AND "
                              "deleted_at IS NULL RETURNING webhook_id",
                              [utcnow(), webhook_id]).fetchone()
        return row is not None

    def add_delivery(self, *, webhook_id: str, event_type: str, payload: dict[str, Any]
                     ) -> DeliveryRecord:
        delivery_id = "whd_" + uuid.uuid4().hex
        with self.store._tx() as con:
            con.execute(f"INSERT INTO webhook_deliveries ({_DELIVERY_COLUMNS}) VALUES "
                        "(?, ?, ?, ?, 'pending', 0, NULL, NULL, ?, NULL)",
                        [delivery_id, webhook_id, event_type, json.dumps(payload), utcnow()])
        rows = self.store._read(f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries "
                                "WHERE delivery_id = ?", [delivery_id])
        return self._delivery(rows[0])

    def update_delivery(self, *, delivery_id: str, status: str, attempts: int,
                        last_status: int | None, last_error: str | None) -> None:
        delivered = utcnow() if status == "delivered" else None
        with self.store._tx() as con:
            con.execute("UPDATE webhook_deliveries SET status = ?, attempts = ?, last_status = ?, "
                        "last_error = ?, delivered_at = ? WHERE delivery_id = ?",
                        [status, attempts, last_status, last_error, delivered, delivery_id])

    def deliveries(self, *, webhook_id: str | None = None, status: str | None = None,
                   limit: int = 100) -> list[DeliveryRecord]:
        """Newest first."""
        where, values = [], []
        for column, value in (("webhook_id", webhook_id), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(value)
        sql = f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, delivery_id DESC LIMIT ?"
        return [self._delivery(r) for r in self.store._read(sql, [*values, limit])]
