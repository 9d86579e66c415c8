"""API keys: generation, sha256 hashing, the bootstrap admin key and fast verification.

Keys are random strings shown once; the store keeps only their sha256 hex digest. The
bootstrap admin key is ``WORKBENCH_TOKEN`` when set (its hash is stored on start), otherwise a
key generated on the first start of an empty store and handed back to the caller to print once.

``KeyRing`` answers "is this bearer token valid?" from memory (one sha256 and a dict lookup per
request); it reloads from the store whenever keys change through it, and records ``last_used_at``
at most once a minute per key so authentication does not turn every read into a write.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from datetime import datetime, timezone

from .store import ApiKeyRecord, Store

SCOPES = ("read", "train", "admin")
PUBLIC = "public"
_IMPLIED = {"read": {"read"}, "train": {"read", "train"}, "admin": {"read", "train", "admin"}}
#: The Panel app launches, cancels and deletes: it needs a key that may train. (A read key gets
#: the login page with that reason; a read-only app is future work.)
APP_SCOPE = "train"

KEY_PREFIX = "wb_"
BOOTSTRAP_NAME = "bootstrap-admin"
_TOUCH_EVERY_S = 60.0


def parse_permissions(text: str) -> list[str]:
    """``"read,train"`` -> ``["read", "train"]`` (ValueError naming an unknown scope)."""
    scopes = [s.strip() for s in str(text).split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown permission {unknown[0] if unknown else text!r}; "
                         f"allowed: {', '.join(SCOPES)}")
    return scopes


def granted(permissions: str) -> set[str]:
    """Every scope a key's ``permissions`` grants (``train`` implies ``read``, ...)."""
    out: set[str] = set()
    for scope in str(permissions).split(","):
        out |= _IMPLIED.get(scope.strip(), set())
    return out


def allows(record: ApiKeyRecord | None, scope: str) -> bool:
    """Whether ``record`` may do what needs ``scope`` (anyone may do what is public). The one
    scope check of every face: the REST policy and the app's login both call it."""
    if scope == PUBLIC:
        return True
    return record is not None and scope in granted(record.permissions)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bootstrap_admin_key(store: Store, token: str | None) -> str | None:
    """Make sure an admin key exists. Returns a newly generated key (to be shown once), or None
    when ``token`` was given or usable keys already exist."""
    if token:
        if store.get_api_key(key_hash=hash_key(token)) is None:
            store.create_api_key(name=BOOTSTRAP_NAME, key_hash=hash_key(token), permissions="admin")
        return None
    if any(True for _ in store.iter_usable_api_keys()):
        return None
    key = generate_key()
    store.create_api_key(name=BOOTSTRAP_NAME, key_hash=hash_key(key), permissions="admin")
    return key


class KeyRing:
    """In-memory view of the usable keys of one store (this process owns the store)."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._by_hash: dict[str, ApiKeyRecord] = {}
        self._touched: dict[str, float] = {}
        self.reload()

    def reload(self) -> None:
        keys = {k.hash: k for k in self.store.iter_usable_api_keys()}
        with self._lock:
            self._by_hash = keys

    def verify(self, token: str | None) -> ApiKeyRecord | None:
        """The key record for a bearer token, or None (unknown, revoked or expired)."""
        if not token:
            return None
        digest = hash_key(token)
        with self._lock:
            record = self._by_hash.get(digest)
        # compare_digest: the dict lookup already matched; this keeps the final check constant-time
        if record is None or not hmac.compare_digest(record.hash, digest):
            return None
        if not record.usable(datetime.now(timezone.utc)):
            return None
        self._touch(record)
        return record

    def _touch(self, record: ApiKeyRecord) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(record.key_id, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S:
                return
            self._touched[record.key_id] = now
        try:
            self.store.touch_api_key(key_id=record.key_id)
        except Exception:  # bookkeeping only; never fail a request for it
            pass

    def create(self, *, name: str, permissions: str = "admin",
               expires_at: datetime | None = None) -> tuple[str, ApiKeyRecord]:
        """A new key (plaintext, returned once) and its record."""
        key = generate_key()
        record = self.store.create_api_key(name=name, key_hash=hash_key(key),
                                           permissions=permissions, expires_at=expires_at)
        self.reload()
        return key, record

    def revoke(self, key_id: str) -> bool:
        found = self.store.revoke_api_key(key_id=key_id)
        self.reload()
        return found
