"""Shared dependencies: the service, the authenticated key, the raw request body.

    ServiceDep = Annotated[Workbench, Depends(get_service)]
    router = APIRouter(..., dependencies=[Depends(require_key)])

``require_key`` / ``KeyDep`` only authenticate. What a route may do is declared with the scope
it needs, ``Depends(workbench.api.policy.requires("read" | "train" | "admin"))`` (or
``policy.ReadKey`` / ``TrainKey`` / ``AdminKey``); ``tests/security/test_scopes.py`` fails for
a route that declares none.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from ..auth import KeyRing
from ..service import Workbench
from ..store import ApiKeyRecord

# auto_error=False: we answer 401 ourselves (HTTPBearer alone says 403 for a missing header).
bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer <key>")

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}

#: ``scope["state"]`` key of the record the rate limiter already verified for this request.
VERIFIED_KEY_STATE = "v1_key"


# async: FastAPI runs a plain ``def`` dependency in its threadpool, a hop that costs more than
# these lookups themselves on every request.
async def get_service(request: Request) -> Workbench:
    return request.app.state.service


def get_keyring(request: HTTPConnection) -> KeyRing:
    return request.app.state.keyring


def verified_key(conn: HTTPConnection, token: str | None) -> ApiKeyRecord | None:
    """The key record for ``token``: the one the rate limiter verified, or verified now."""
    if not token:
        return None
    cached = conn.scope.get("state", {}).get(VERIFIED_KEY_STATE)
    if cached is not None:
        return cached
    return get_keyring(conn).verify(token)


async def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> ApiKeyRecord:
    """401 unless the request carries a valid, unrevoked, unexpired API key (authentication
    only: no scope; see ``workbench.api.policy``)."""
    if credentials is None:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <key>)",
                            headers=_UNAUTHORIZED)
    record = verified_key(request, credentials.credentials)
    if record is None:
        raise HTTPException(401, "invalid, revoked or expired API key", headers=_UNAUTHORIZED)
    return record


async def raw_body(request: Request) -> bytes:
    """The body as bytes (for endpoints that parse it themselves, faster than FastAPI's
    stdlib-json path)."""
    return await request.body()


ServiceDep = Annotated[Workbench, Depends(get_service)]
KeyDep = Annotated[ApiKeyRecord, Depends(require_key)]
BodyDep = Annotated[bytes, Depends(raw_body)]
