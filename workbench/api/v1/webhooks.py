"""``/api/plugin-core/webhooks`` (Cortex conventions: "Event notifications"): subscribe a URL to
run and job events. Admin only (a webhook sends every run's events to another machine).

    POST   /webhooks                 {"url", "events": ["job.completed", ...], "secret"?}
                                      -> the webhook and its signing secret (shown once)
    GET    /webhooks                 the webhooks (no secrets)
    GET    /webhooks/{id}            one
    DELETE /webhooks/{id}            stop delivering to it
    GET    /webhooks/{id}/deliveries its deliveries, newest first (status, attempts, last_status)
    POST   /webhooks/{id}/ping       queue a ``webhook.ping`` delivery now

Deliveries, signatures, retries and the outbound allowlist: ``workbench.service.webhooks``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...outbound import OutboundRefused
from ...service.webhooks import ALL_EVENTS, WebhookDispatcher
from ...store.webhooks import DeliveryRecord, WebhookRecord
from .conventions import ID_ERRORS, READ_ERRORS, Envelope, not_found, ok, validation_error
from .security import AdminKey

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http(s) URL on an allowed "
                     "host (WORKBENCH_ALLOWED_HOSTS)")
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1, max_length=20,
                              description=f"any of {', '.join(ALL_EVENTS)}, or * for all")
    secret: str | None = Field(default=None, min_length=16, max_length=200,
                               description="the HMAC signing secret (generated if omitted)")

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        for name in value:
            if name != "*" and name not in ALL_EVENTS:
                raise ValueError(f"unknown event {name!r}; events: {', '.join(ALL_EVENTS)}, *")
        return list(dict.fromkeys(value))


class WebhookPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: str


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="signs every delivery (X-Webhook-Signature); shown once")


def _dispatcher(request: Request) -> WebhookDispatcher:
    return request.app.state.webhooks


def _view(hook: WebhookRecord) -> dict[str, Any]:
    return {"id": hook.webhook_id, "url": hook.url, "events": hook.events,
            "created_at": hook.created_at.isoformat()}


def _delivery(d: DeliveryRecord) -> dict[str, Any]:
    return {"id": d.delivery_id, "webhook_id": d.webhook_id, "event": d.event_type,
            "status": d.status, "attempts": d.attempts, "last_status": d.last_status,
            "last_error": d.last_error, "created_at": d.created_at.isoformat(),
            "delivered_at": None if d.delivered_at is None else d.delivered_at.isoformat(),
            "data": d.payload}


def _get(request: Request, webhook_id: str) -> WebhookRecord:
    hook = _dispatcher(request).store.get(webhook_id=webhook_id)
    if hook is None:
        raise not_found("webhook", webhook_id, "webhook_id")
    return hook


@router.post("", status_code=201, response_model=Envelope[WebhookCreated], responses=READ_ERRORS)
def create_webhook(body: WebhookCreate, request: Request, key: AdminKey) -> Response:
    """Subscribe a URL to run/job events; the signing secret is shown once."""
    try:
        hook, secret = _dispatcher(request).subscribe(url=body.url, events=body.events,
                                                      key_id=key.key_id, secret=body.secret)
    except OutboundRefused as exc:
        raise validation_error("url", str(exc)) from None
    return ok({**_view(hook), "secret": secret}, status_code=201)


@router.get("", response_model=Envelope[list[WebhookPublic]], responses=READ_ERRORS)
def list_webhooks(request: Request, _: AdminKey) -> Response:
    """The webhooks, oldest first (never their secrets)."""
    hooks = [_view(h) for h in _dispatcher(request).store.active()]
    return ok(hooks, meta={"total": len(hooks)})


@router.get("/{webhook_id}", response_model=Envelope[WebhookPublic], responses=ID_ERRORS)
def get_webhook(webhook_id: str, request: Request, _: AdminKey) -> Response:
    """One webhook."""
    return ok(_view(_get(request, webhook_id)))


@router.delete("/{webhook_id}", response_model=Envelope[WebhookPublic], responses=ID_ERRORS)
def delete_webhook(webhook_id: str, request: Request, _: AdminKey) -> Response:
    """Stop delivering to a webhook (pending deliveries end as failed)."""
    hook = _get(request, webhook_id)
    _dispatcher(request).unsubscribe(webhook_id)
    return ok({**_view(hook), "status": "deleted"})


@router.get("/{webhook_id}/deliveries", responses=ID_ERRORS)
def list_deliveries(webhook_id: str, request: Request, _: AdminKey,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Response:
    """A webhook's deliveries, newest first."""
    _get(request, webhook_id)
    found = _dispatcher(request).store.deliveries(webhook_id=webhook_id, limit=limit)
    return ok([_delivery(d) for d in found], meta={"limit": limit})


@router.post("/{webhook_id}/ping", status_code=202, responses=ID_ERRORS)
def ping_webhook(webhook_id: str, request: Request, _: AdminKey) -> Response:
    """Queue a ``webhook.ping`` delivery now (see its outcome under deliveries)."""
    return ok(_delivery(_dispatcher(request).ping(_get(request, webhook_id))), status_code=202)
