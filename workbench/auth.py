"""API keys: generation, keyed hashing, the bootstrap admin key, fast verification and the
app's login sessions.

Keys are random strings shown once; the store keeps only ``HMAC-SHA256(server secret, key)``
(``hmac-sha256$<hex>``). The secret lives in ``$WORKBENCH_HOME/secret.key`` (mode 0600, created
on first use), not in the database, so a copied database does not allow guessing keys offline.
Stores written before keyed hashing hold bare sha256 digests: those still verify, and are
replaced by the keyed hash on their first successful use (the bootstrap key at start).

The bootstrap admin key is ``WORKBENCH_TOKEN`` when set (its hash is stored on start, and a
revoked one is restored: the server's environment is the operator's word), otherwise a key
generated on the first start of an empty store and handed back to the caller to print once.

``KeyRing`` answers "is this bearer token valid?" from memory (one HMAC and a dict lookup per
request); it reloads from the store whenever keys change through it, and records
``last_used_at`` at most once a minute per key so authentication does not turn every read into
a write. It also holds the app's login sessions (:class:`Sessions`): the browser's cookie
carries a random session id, never the key; revoking a key ends its sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .config import OWNER_TIER
from .files import create_private_file
from .store import ApiKeyRecord, Store

log = logging.getLogger(__name__)

SCOPES = ("read", "train", "admin")
PUBLIC = "public"
_IMPLIED = {"read": {"read"}, "train": {"read", "train"}, "admin": {"read", "train", "admin"}}
#: The Panel app launches, cancels and deletes: it needs a key that may train. (A read key gets
#: the login page with that reason; a read-only app is future work.)
APP_SCOPE = "train"

KEY_PREFIX = "wb_"
BOOTSTRAP_NAME = "bootstrap-admin"
#: Credentials an owner process makes for itself and revokes when it stops
#: (``workbench.server.LOCAL_KEY_PREFIX``): they do not count as a way back in for the admin.
EPHEMERAL_PREFIX = "local:"
_TOUCH_EVERY_S = 60.0

HASH_SCHEME = "hmac-sha256$"
SECRET_FILE = "secret.key"

SESSION_PREFIX = "wbs_"
SESSION_IDLE_S = 12 * 3600.0  # a session unused this long ends (each use renews it)
SESSION_MAX_S = 7 * 24 * 3600.0  # and none outlives this, however often it is used
_MAX_SESSIONS = 10_000


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


# ---- the server secret and key hashes ----------------------------------------------------------
_secrets: dict[Path, bytes] = {}
_secrets_lock = threading.Lock()


def secret_path(home: Path | None = None) -> Path:
    if home is None:
        from .config import get_settings

        home = get_settings().home
    return Path(home) / SECRET_FILE


def server_secret(home: Path | None = None) -> bytes:
    """The HMAC secret of this home, created (32 random bytes, mode 0600) on first use."""
    path = secret_path(home)
    with _secrets_lock:
        if path in _secrets:
            return _secrets[path]
        secret = _read_or_create_secret(path)
        _secrets[path] = secret
        return secret


def _read_or_create_secret(path: Path) -> bytes:
    for _ in range(50):
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            create_private_file(path, secrets.token_hex(32) + "\n")
            continue
        if len(text) >= 32:
            with contextlib.suppress(OSError):
                if path.stat().st_mode & 0o077:
                    os.chmod(path, 0o600)
            return text.encode()
        time.sleep(0.05)  # another process is writing it
    raise RuntimeError(f"{path}: the server secret is empty or too short; delete it to make a "
                       "new one (keys hashed with the old one then stop working)")


def hash_key(key: str, secret: bytes | None = None) -> str:
    """The stored form of ``key``: ``hmac-sha256$`` + HMAC-SHA256(server secret, key)."""
    digest = hmac.new(secret or server_secret(), key.encode("utf-8"), hashlib.sha256)
    return HASH_SCHEME + digest.hexdigest()


def legacy_hash_key(key: str) -> str:
    """The unsalted sha256 hex older stores hold (verified, then upgraded)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def find_key(store: Store, key: str) -> ApiKeyRecord | None:
    """The record of ``key`` (usable or not), upgrading a legacy sha256 hash on the way."""
    record = store.get_api_key(key_hash=hash_key(key))
    if record is not None:
        return record
    legacy = store.get_api_key(key_hash=legacy_hash_key(key))
    if legacy is None:
        return None
    store.set_api_key_hash(key_id=legacy.key_id, key_hash=hash_key(key))
    return store.get_api_key(key_id=legacy.key_id)


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def bootstrap_admin_key(store: Store, token: str | None) -> str | None:
    """Make sure an admin key exists. Returns a newly generated key (to be shown once), or None
    when ``token`` was given or usable keys already exist.

    ``token`` (``WORKBENCH_TOKEN``) is the operator's: its key is created if unknown, and made
    usable again if it was revoked or expired (so a restart with it always lets the operator
    in)."""
    if token:
        record = find_key(store, token)
        if record is None:
            store.create_api_key(name=BOOTSTRAP_NAME, key_hash=hash_key(token), permissions="admin",
                                 rate_tier=OWNER_TIER)
            return None
        if record.rate_tier is None and record.rate_limit is None:  # a key from before tiers
            store.set_api_key_rate(key_id=record.key_id, rate_tier=OWNER_TIER, rate_limit=None)
        if not record.usable():
            store.restore_api_key(key_id=record.key_id)
            log.warning("WORKBENCH_TOKEN: restored API key %s (%s), which was %s", record.key_id,
                        record.name, "revoked" if record.revoked_at else "expired")
        return None
    if any(True for _ in store.iter_usable_api_keys()):
        return None
    key = generate_key()
    store.create_api_key(name=BOOTSTRAP_NAME, key_hash=hash_key(key), permissions="admin",
                         rate_tier=OWNER_TIER)
    return key


class LastAdminKey(ValueError):
    """Revoking this key would leave no usable admin key."""


def _counts_as_admin(record: ApiKeyRecord, now: datetime) -> bool:
    return (record.usable(now) and "admin" in granted(record.permissions)
            and not record.name.startswith(EPHEMERAL_PREFIX))


# ---- login sessions ---------------------------------------------------------------------------
class Sessions:
    """Server-side login sessions of the app (in memory: a restart logs browsers out).

    A session id is random (256 bits) and maps to a key id; it ends after ``idle_s`` without
    use (each use renews it), after ``max_s`` in any case, on logout, and when its key is
    revoked or expires."""

    def __init__(self, *, idle_s: float = SESSION_IDLE_S, max_s: float = SESSION_MAX_S):
        self.idle_s, self.max_s = idle_s, max_s
        self._lock = threading.Lock()
        self._by_id: dict[str, tuple[str, float, float]] = {}  # id -> (key_id, created, used)

    def open(self, key_id: str) -> str:
        now = time.monotonic()
        session_id = SESSION_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            if len(self._by_id) >= _MAX_SESSIONS:
                self._prune(now)
            if len(self._by_id) >= _MAX_SESSIONS:  # still full: the least recently used goes
                oldest = min(self._by_id, key=lambda s: self._by_id[s][2])
                del self._by_id[oldest]
            self._by_id[session_id] = (key_id, now, now)
        return session_id

    def key_id(self, session_id: str | None) -> str | None:
        """The key id of a live session (renewing it), or None."""
        if not session_id or not session_id.startswith(SESSION_PREFIX):
            return None
        now = time.monotonic()
        with self._lock:
            entry = self._by_id.get(session_id)
            if entry is None:
                return None
            key_id, created, used = entry
            if now - used > self.idle_s or now - created > self.max_s:
                del self._by_id[session_id]
                return None
            self._by_id[session_id] = (key_id, created, now)
            return key_id

    def end(self, session_id: str | None) -> bool:
        with self._lock:
            return self._by_id.pop(session_id or "", None) is not None

    def end_key(self, key_id: str) -> int:
        """End every session of ``key_id``; how many there were."""
        with self._lock:
            gone = [s for s, entry in self._by_id.items() if entry[0] == key_id]
            for s in gone:
                del self._by_id[s]
        return len(gone)

    def count(self, key_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for e in self._by_id.values() if key_id is None or e[0] == key_id)

    def _prune(self, now: float) -> None:
        self._by_id = {s: e for s, e in self._by_id.items()
                       if now - e[2] <= self.idle_s and now - e[1] <= self.max_s}


class KeyRing:
    """In-memory view of the usable keys of one store (this process owns the store)."""

    def __init__(self, store: Store, *, secret: bytes | None = None):
        self.store = store
        self.secret = secret or server_secret()
        self.sessions = Sessions()
        self._lock = threading.Lock()
        self._revoke_lock = threading.Lock()
        self._by_hash: dict[str, ApiKeyRecord] = {}
        self._by_id: dict[str, ApiKeyRecord] = {}
        self._touched: dict[str, float] = {}
        self.reload()

    def reload(self) -> None:
        keys = {k.hash: k for k in self.store.iter_usable_api_keys()}
        with self._lock:
            self._by_hash = keys
            self._by_id = {k.key_id: k for k in keys.values()}

    def hash(self, token: str) -> str:
        return hash_key(token, self.secret)

    def verify(self, token: str | None) -> ApiKeyRecord | None:
        """The key record for a bearer token, or None (unknown, revoked or expired)."""
        if not token:
            return None
        digest = self.hash(token)
        with self._lock:
            record = self._by_hash.get(digest)
        if record is None:
            record = self._verify_legacy(token)
            digest = record.hash if record is not None else digest
        # compare_digest: the dict lookup already matched; this keeps the final check constant-time
        if record is None or not hmac.compare_digest(record.hash, digest):
            return None
        if not record.usable(datetime.now(timezone.utc)):
            return None
        self._touch(record)
        return record

    def _verify_legacy(self, token: str) -> ApiKeyRecord | None:
        """A key still stored as a bare sha256: upgrade its hash, then answer for it."""
        legacy = legacy_hash_key(token)
        with self._lock:
            record = self._by_hash.get(legacy)
        if record is None or not hmac.compare_digest(record.hash, legacy):
            return None
        try:
            self.store.set_api_key_hash(key_id=record.key_id, key_hash=self.hash(token))
        except Exception:  # read-only store or a race: the legacy hash still answers
            log.warning("could not upgrade the hash of API key %s", record.key_id, exc_info=True)
            return record
        self.reload()
        with self._lock:
            return self._by_id.get(record.key_id)

    def record(self, key_id: str) -> ApiKeyRecord | None:
        """The usable key ``key_id`` (None: unknown, revoked or expired)."""
        with self._lock:
            record = self._by_id.get(key_id)
        if record is None or not record.usable(datetime.now(timezone.utc)):
            return None
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
               expires_at: datetime | None = None, rate_tier: str | None = None,
               rate_limit: int | None = None) -> tuple[str, ApiKeyRecord]:
        """A new key (plaintext, returned once) and its record."""
        key = generate_key()
        record = self.store.create_api_key(name=name, key_hash=self.hash(key),
                                           permissions=permissions, expires_at=expires_at,
                                           rate_tier=rate_tier, rate_limit=rate_limit)
        self.reload()
        return key, record

    def revoke(self, key_id: str, *, allow_last_admin: bool = True) -> bool:
        """Revoke a key and end its sessions; False if there is no such key.

        ``allow_last_admin=False`` (what an admin's request gets) raises :class:`LastAdminKey`
        instead of revoking the last usable admin key (ephemeral owner credentials do not
        count): nobody could manage keys afterwards."""
        with self._revoke_lock:
            if not allow_last_admin:
                self._refuse_last_admin(key_id)
            found = self.store.revoke_api_key(key_id=key_id)
            self.reload()
        self.sessions.end_key(key_id)
        return found

    def _refuse_last_admin(self, key_id: str) -> None:
        now = datetime.now(timezone.utc)
        target = self.store.get_api_key(key_id=key_id)
        if target is None or not _counts_as_admin(target, now):
            return
        others = [k for k in self.store.iter_usable_api_keys()
                  if k.key_id != key_id and _counts_as_admin(k, now)]
        if not others:
            raise LastAdminKey(
                f"API key {key_id} is the last usable admin key: revoking it would leave nobody "
                "able to manage keys. Create another admin key first (POST /api/v1/auth/keys "
                'with "permissions": ["admin"]), then revoke this one.')

    # -- the app's login sessions --------------------------------------------------------------
    def open_session(self, record: ApiKeyRecord) -> str:
        """A new login session for ``record``'s key: the id the app's cookie carries."""
        return self.sessions.open(record.key_id)

    def session(self, session_id: str | None) -> ApiKeyRecord | None:
        """The key of a live session (renewed by this use) if that key is still usable."""
        key_id = self.sessions.key_id(session_id)
        if key_id is None:
            return None
        record = self.record(key_id)
        if record is None:  # revoked or expired since: the session ends with it
            self.sessions.end_key(key_id)
        return record

    def end_session(self, session_id: str | None) -> bool:
        return self.sessions.end(session_id)
