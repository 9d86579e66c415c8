"""API keys in the store: only hashes are kept, never the keys themselves (HMAC-SHA256 with
the server's secret; older stores hold plain sha256 digests, upgraded on first use).

A mixin of :class:`workbench.store.Store` (it uses the store's ``_tx``/``_read`` helpers), so
callers write ``store.create_api_key(name=..., key_hash=...)`` like every other store method.
Hashing and key generation live in :mod:`workbench.auth`; this module only persists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import duckdb

from workbench.store.times import aware, aware_opt, to_db_opt, utcnow

_COLUMNS = ("key_id, name, hash, permissions, created_at, expires_at, revoked_at, last_used_at, "
            "rate_tier, rate_limit")


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    name: str
    hash: str  # "hmac-sha256$<hex>" of the key (a bare sha256 hex in older stores)
    permissions: str  # "admin" | "read" | comma-separated scopes (later issues)
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    rate_tier: str | None = None  # a tier of settings.rate_limits (None: its default tier)
    rate_limit: int | None = None  # requests per minute for this key alone (overrides the tier)

    def usable(self, now: datetime | None = None) -> bool:
        """Not revoked and not expired."""
        now = now or datetime.now(timezone.utc)
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class KeysMixin:
    """Keyword-only API-key methods of ``Store``."""

    if TYPE_CHECKING:  # provided by Store
        def _tx(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...
        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    @staticmethod
    def _key(row: tuple) -> ApiKeyRecord:
        return ApiKeyRecord(
            key_id=row[0], name=row[1], hash=row[2], permissions=row[3],
            created_at=aware(row[4]), expires_at=aware_opt(row[5]),
            revoked_at=aware_opt(row[6]), last_used_at=aware_opt(row[7]),
            rate_tier=row[8], rate_limit=row[9],
        )

    def create_api_key(
        self, *, name: str, key_hash: str, permissions: str = "admin",
        expires_at: datetime | None = None, rate_tier: str | None = None,
        rate_limit: int | None = None,
    ) -> ApiKeyRecord:
        """Store a key's hash (ValueError if that hash is already stored)."""
        now = utcnow()
        key_id = "key_" + uuid4().hex
        with self._tx() as con:
            if con.execute("SELECT 1 FROM api_keys WHERE hash = ?", [key_hash]).fetchone():
                raise ValueError("an API key with this hash already exists")
            con.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
                [key_id, name, key_hash, permissions, now, to_db_opt(expires_at), rate_tier,
                 rate_limit],
            )
        return ApiKeyRecord(key_id, name, key_hash, permissions, aware(now),
                            aware_opt(to_db_opt(expires_at)), None, None, rate_tier, rate_limit)

    def get_api_key(self, *, key_id: str | None = None, key_hash: str | None = None
                    ) -> ApiKeyRecord | None:
        if (key_id is None) == (key_hash is None):
            raise ValueError("give exactly one of key_id or key_hash")
        column, value = ("key_id", key_id) if key_id is not None else ("hash", key_hash)
        rows = self._read(f"SELECT {_COLUMNS} FROM api_keys WHERE {column} = ?", [value])
        return self._key(rows[0]) if rows else None

    def list_api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyRecord]:
        """Oldest first."""
        sql = f"SELECT {_COLUMNS} FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [self._key(r) for r in self._read(sql + " ORDER BY created_at, key_id")]

    def iter_usable_api_keys(self) -> Iterator[ApiKeyRecord]:
        now = datetime.now(timezone.utc)
        return (k for k in self.list_api_keys(include_revoked=False) if k.usable(now))

    def revoke_api_key(self, *, key_id: str) -> bool:
        """Mark a key revoked; False if there is no such key."""
        now = utcnow()
        with self._tx() as con:
            row = con.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) WHERE key_id = ? "
                "RETURNING key_id", [now, key_id],
            ).fetchone()
        return row is not None

    def set_api_key_hash(self, *, key_id: str, key_hash: str) -> bool:
        """Replace a key's stored hash (an upgrade to the current hashing); False if no such key."""
        with self._tx() as con:
            row = con.execute("UPDATE api_keys SET hash = ? WHERE key_id = ? RETURNING key_id",
                              [key_hash, key_id]).fetchone()
        return row is not None

    def restore_api_key(self, *, key_id: str) -> bool:
        """Make a revoked or expired key usable again (no revocation, no expiry)."""
        with self._tx() as con:
            row = con.execute("UPDATE api_keys SET revoked_at = NULL, expires_at = NULL "
                              "WHERE key_id = ? RETURNING key_id", [key_id]).fetchone()
        return row is not None

    def set_api_key_rate(self, *, key_id: str, rate_tier: str | None,
                         rate_limit: int | None) -> bool:
        """Set a key's rate-limit tier and per-key limit (None: the default); False if no such
        key."""
        with self._tx() as con:
            row = con.execute("UPDATE api_keys SET rate_tier = ?, rate_limit = ? WHERE key_id = ? "
                              "RETURNING key_id", [rate_tier, rate_limit, key_id]).fetchone()
        return row is not None

    def touch_api_key(self, *, key_id: str, when: datetime | None = None) -> None:
        """Record a use of the key (callers throttle this; it is a write)."""
        when = to_db_opt(when or datetime.now(timezone.utc))
        with self._tx() as con:
            con.execute("UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", [when, key_id])
