"""``/api/v1/auth/keys``: create (the key is shown once), list (no secrets), set a key's
rate-limit tier (``PATCH``), revoke. Admin only.

The store keeps only a keyed hash of each key (``workbench.auth`` / ``workbench.store.keys``).
The last usable admin key cannot be revoked (409 CONFLICT): nobody could manage keys after.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...auth import KeyRing, LastAdminKey
from ...config import get_settings
from ...store import ApiKeyRecord
from .conventions import (
    CONFLICT,
    ID_ERRORS,
    READ_ERRORS,
    ApiError,
    Envelope,
    _responses,
    not_found,
    ok,
    validation_error,
)
from .query import ListQueryDep, ListSpec, equals, paginate
from .security import SCOPES, AdminKey, parse_permissions

router = APIRouter(prefix="/auth/keys", tags=["auth"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    permissions: list[str] = Field(default_factory=lambda: ["read"], min_length=1, max_length=3,
                                   description=f"any of {', '.join(SCOPES)}")
    expires_at: datetime | None = Field(default=None, description="ISO 8601; must be in the "
                                        "future")
    expires_in_seconds: int | None = Field(default=None, ge=1, le=10 * 365 * 86400,
                                           description="alternative to expires_at")
    rate_limit_tier: str | None = Field(default=None, max_length=50, description=
                                        "free (the default: 60 requests/minute), pro, "
                                        "enterprise, owner, or a tier of "
                                        "WORKBENCH_RATE_LIMIT_TIERS")
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=10_000_000, strict=True,
                                              description="this key's own limit (a custom "
                                              "plan); overrides the tier")

    @field_validator("rate_limit_tier")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        return _known_tier(value)

    @field_validator("permissions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for scope in value:
            parse_permissions(scope)
        return list(dict.fromkeys(value))

    @field_validator("expires_at")
    @classmethod
    def _representable(cls, value: datetime | None) -> datetime | None:
        """Aware and representable in UTC (``9999-12-31T23:59:59-14:00`` is year 10000 there)."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        try:
            return value.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise ValueError("out of range: must be at most 9999-12-31T23:59:59Z") from None


def _known_tier(value: str | None) -> str | None:
    tiers = get_settings().rate_limits.tiers
    if value is not None and value not in tiers:
        raise ValueError(f"unknown tier {value!r}; tiers: {', '.join(tiers)}")
    return value


class KeyRate(BaseModel):
    """``PATCH /auth/keys/{id}``: a key's rate-limit tier and own limit (null: the default)."""

    model_config = ConfigDict(extra="forbid")

    rate_limit_tier: str | None = Field(default=None, max_length=50)
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=10_000_000, strict=True)

    @field_validator("rate_limit_tier")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        return _known_tier(value)


class KeyPublic(BaseModel):
    key_id: str
    name: str
    permissions: list[str]
    created_at: str
    expires_at: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None
    status: str = Field(description="active, expired or revoked")
    rate_limit_tier: str = Field(description="the key's tier (the default tier if none set)")
    rate_limit_per_minute: int = Field(description="requests per minute this key may make")


class KeyCreated(KeyPublic):
    key: str = Field(description="the secret: shown only in this response")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def key_view(record: ApiKeyRecord) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    limits = get_settings().rate_limits
    status = ("revoked" if record.revoked_at is not None else
              "expired" if record.expires_at is not None and record.expires_at <= now else
              "active")
    return {
        "key_id": record.key_id, "name": record.name,
        "permissions": [s for s in record.permissions.split(",") if s],
        "created_at": _iso(record.created_at), "expires_at": _iso(record.expires_at),
        "revoked_at": _iso(record.revoked_at), "last_used_at": _iso(record.last_used_at),
        "status": status,
        "rate_limit_tier": record.rate_tier or limits.default_tier,
        "rate_limit_per_minute": record.rate_limit if record.rate_limit is not None
        else limits.per_minute(record.rate_tier),
    }


LIST_SPEC = ListSpec(
    fields=tuple(KeyPublic.model_fields),
    sortable=("created_at", "name", "status", "expires_at", "last_used_at"),
    filters={"status": equals("status", allowed=("active", "expired", "revoked"))},
)


def _keyring(request: Request) -> KeyRing:
    return request.app.state.keyring


@router.post("", status_code=201, response_model=Envelope[KeyCreated], responses=READ_ERRORS)
def create_key(body: KeyCreate, request: Request, _: AdminKey) -> Response:
    """Create a key with permissions and an optional expiry; the secret is shown once."""
    if body.expires_at is not None and body.expires_in_seconds is not None:
        raise validation_error("expires_at", "give expires_at or expires_in_seconds, not both")
    expires = body.expires_at
    if body.expires_in_seconds is not None:
        expires = datetime.now(timezone.utc) + timedelta(seconds=body.expires_in_seconds)
    if expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=timezone.utc)
        if expires <= datetime.now(timezone.utc):
            raise validation_error("expires_at", "must be in the future")
    key, record = _keyring(request).create(
        name=body.name, permissions=",".join(body.permissions), expires_at=expires,
        rate_tier=body.rate_limit_tier, rate_limit=body.rate_limit_per_minute)
    return ok({**key_view(record), "key": key}, status_code=201)


@router.get("", response_model=Envelope[list[KeyPublic]], responses=READ_ERRORS)
def list_keys(request: Request, query: ListQueryDep, _: AdminKey,
              status: str | None = None) -> Response:
    """All keys (never their secrets or hashes); filter by ``status``."""
    views = [key_view(k) for k in _keyring(request).store.list_api_keys()]
    page, meta = paginate(views, query, LIST_SPEC)
    return ok(page, meta=meta)


@router.get("/{key_id}", response_model=Envelope[KeyPublic], responses=ID_ERRORS)
def get_key(key_id: str, request: Request, _: AdminKey) -> Response:
    """One key's metadata."""
    record = _keyring(request).store.get_api_key(key_id=key_id)
    if record is None:
        raise not_found("API key", key_id, "key_id")
    return ok(key_view(record))


@router.patch("/{key_id}", response_model=Envelope[KeyPublic], responses=ID_ERRORS)
def set_key_rate(key_id: str, body: KeyRate, request: Request, _: AdminKey) -> Response:
    """Change a key's rate-limit tier and own limit (the next request counts against it)."""
    keyring = _keyring(request)
    if not keyring.store.set_api_key_rate(key_id=key_id, rate_tier=body.rate_limit_tier,
                                          rate_limit=body.rate_limit_per_minute):
        raise not_found("API key", key_id, "key_id")
    keyring.reload()
    record = keyring.store.get_api_key(key_id=key_id)
    assert record is not None
    return ok(key_view(record))


@router.delete("/{key_id}", response_model=Envelope[KeyPublic],
               responses={**ID_ERRORS, **_responses(409)})
def revoke_key(key_id: str, request: Request, _: AdminKey) -> Response:
    """Revoke a key: it gets 401 AUTH_INVALID from now on, and its app sessions end. 409
    CONFLICT for the last usable admin key."""
    keyring = _keyring(request)
    try:
        found = keyring.revoke(key_id, allow_last_admin=False)
    except LastAdminKey as exc:
        raise ApiError(409, CONFLICT, str(exc), field="key_id") from None
    if not found:
        raise not_found("API key", key_id, "key_id")
    record = keyring.store.get_api_key(key_id=key_id)
    assert record is not None
    return ok(key_view(record))
