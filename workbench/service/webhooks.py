"""Webhook deliveries: run and job events POSTed to subscribed URLs, signed, retried.

    dispatcher = WebhookDispatcher(service)      # follows service.bus; call close() on shutdown
    dispatcher.subscribe(url=..., events=["job.completed"], key_id=...) -> (record, secret)

Each delivery is one JSON POST::

    {"id": "whd_...", "type": "job.completed", "created_at": "...", "data": {job_id, run_id,
     status, metrics, error, ...}}

with ``X-Webhook-Id``, ``X-Webhook-Event``, ``X-Webhook-Delivery``, ``X-Webhook-Timestamp``
(epoch seconds) and ``X-Webhook-Signature: sha256=<hex>``, the HMAC-SHA256 of
``"<timestamp>.<body>"`` under the webhook's secret (a receiver recomputes it and rejects a
stale timestamp, so a captured delivery cannot be replayed later).

Only URLs the outbound policy allows are called (``workbench.outbound``: checked at subscribe
time and again before every attempt); redirects are not followed. A 2xx answer delivers; anything
else is retried after ``webhook_backoff_s``, doubling, up to ``webhook_max_attempts`` tries,
then the delivery is ``failed``. Deliveries are stored (``workbench.store.webhooks``), so the
pending ones are tried again after a restart. What went wrong is recorded as the HTTP status or
"could not deliver", never what the other side said. Secrets live in an owner-only file
(``$WORKBENCH_HOME/webhook_secrets.json``), never in the database.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .. import events as ev
from ..config import get_settings
from ..nodes.tokens import TokenFile
from ..outbound import OutboundRefused, check_url, is_loopback
from ..store.webhooks import DeliveryRecord, WebhookRecord, Webhooks

log = logging.getLogger(__name__)

SECRETS_FILE = "webhook_secrets.json"
# bus event -> the webhook event types it produces (Cortex job names and the run names)
EVENT_TYPES = {
    ev.RUN_STARTED: ("job.started", "run.started"),
    ev.RUN_COMPLETED: ("job.completed", "run.completed"),
    ev.RUN_FAILED: ("job.failed", "run.failed"),
    ev.RUN_CANCELLED: ("job.cancelled", "run.cancelled"),
}
ALL_EVENTS = tuple(name for names in EVENT_TYPES.values() for name in names)
PING = "webhook.ping"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer (not delivered), never a hop elsewhere


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST and return the HTTP status (an HTTPError's too); OSError when nothing answered."""
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers: list[Any] = [_NoRedirect()]
    if is_loopback(host):
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _run_data(event: dict[str, Any]) -> dict[str, Any]:
    run_id = str(event.get("run_id"))
    data = event.get("data") or {}
    status = {ev.RUN_STARTED: "training", ev.RUN_COMPLETED: "completed",
              ev.RUN_FAILED: "failed", ev.RUN_CANCELLED: "cancelled"}[event["type"]]
    out: dict[str, Any] = {"job_id": "job_" + run_id.removeprefix("r_"), "run_id": run_id,
                           "status": status}
    for name in ("metrics", "epochs_run", "stopped_early", "error", "device", "epochs_total"):
        if name in data:
            out[name] = data[name]
    return out


class WebhookDispatcher:
    def __init__(self, service: Any):
        settings = get_settings()
        self.store = Webhooks(service.store)
        self.secrets = TokenFile(settings.home / SECRETS_FILE)
        self.max_attempts = settings.webhook_max_attempts
        self.backoff_s = settings.webhook_backoff_s
        self.timeout_s = settings.webhook_timeout_s
        self._queue: list[tuple[float, int, str, int]] = []  # (due, seq, delivery id, attempt)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._pending: dict[str, DeliveryRecord] = {}
        for delivery in self.store.deliveries(status="pending", limit=10_000):
            self._enqueue(delivery, delivery.attempts + 1, 0.0)
        self._thread = threading.Thread(target=self._work, name="webhooks", daemon=True)
        self._thread.start()
        self._unsubscribe = service.bus.subscribe(self._on_event)

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, *, url: str, events: list[str], key_id: str | None,
                  secret: str | None = None) -> tuple[WebhookRecord, str]:
        """A new webhook (``OutboundRefused`` for a URL the policy refuses) and its secret."""
        check_url(url)
        record = self.store.create(url=url, events=events, key_id=key_id)
        secret = secret or "whsec_" + secrets.token_urlsafe(32)
        self.secrets.set(record.webhook_id, secret)
        return record, secret

    def unsubscribe(self, webhook_id: str) -> bool:
        found = self.store.delete(webhook_id=webhook_id)
        self.secrets.delete(webhook_id)
        return found

    def ping(self, hook: WebhookRecord) -> DeliveryRecord:
        """Queue a ``webhook.ping`` delivery to ``hook`` now."""
        return self._deliver(hook, PING, {"webhook_id": hook.webhook_id})

    # -- events -> deliveries --------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        names = EVENT_TYPES.get(str(event.get("type")))
        if not names:
            return
        data = _run_data(event)
        for hook in self.store.active():
            for name in names:
                if name in hook.events or "*" in hook.events:
                    self._deliver(hook, name, data)

    def _deliver(self, hook: WebhookRecord, name: str, data: dict[str, Any]) -> DeliveryRecord:
        delivery = self.store.add_delivery(webhook_id=hook.webhook_id, event_type=name,
                                           payload=data)
        self._enqueue(delivery, 1, 0.0)
        return delivery

    def _enqueue(self, delivery: DeliveryRecord, attempt: int, delay: float) -> None:
        with self._cond:
            self._pending[delivery.delivery_id] = delivery
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq),
                                         delivery.delivery_id, attempt))
            self._cond.notify()

    # -- the worker ------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._queue
                                            or self._queue[0][0] > time.monotonic()):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, _, delivery_id, attempt = heapq.heappop(self._queue)
                delivery = self._pending.pop(delivery_id)
            try:
                self._attempt(delivery, attempt)
            except Exception:  # the store closed under us, or a bug: never kill the worker
                log.exception("webhook delivery %s failed unexpectedly", delivery_id)

    def _attempt(self, delivery: DeliveryRecord, attempt: int) -> None:
        hook = self.store.get(webhook_id=delivery.webhook_id)
        secret = self.secrets.get(delivery.webhook_id)
        if hook is None or secret is None:  # unsubscribed meanwhile
            self.store.update_delivery(delivery_id=delivery.delivery_id, status="failed",
                                       attempts=attempt - 1, last_status=None,
                                       last_error="the webhook was deleted")
            return
        status: int | None = None
        try:
            check_url(hook.url)
            body = json.dumps({"id": delivery.delivery_id, "type": delivery.event_type,
                               "created_at": delivery.created_at.isoformat(),
                               "data": delivery.payload}).encode()
            timestamp = str(int(time.time()))
            status = _post(hook.url, body, {
                "Content-Type": "application/json", "User-Agent": "nn-workbench-webhooks",
                "X-Webhook-Id": hook.webhook_id, "X-Webhook-Event": delivery.event_type,
                "X-Webhook-Delivery": delivery.delivery_id, "X-Webhook-Timestamp": timestamp,
                "X-Webhook-Signature": sign(secret, timestamp, body),
            }, self.timeout_s)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except OutboundRefused:
            error = "not allowed (WORKBENCH_ALLOWED_HOSTS)"
        except (OSError, ValueError):
            error = "could not deliver"
        if error is None:
            self.store.update_delivery(delivery_id=delivery.delivery_id, status="delivered",
                                       attempts=attempt, last_status=status, last_error=None)
            return
        final = attempt >= self.max_attempts
        self.store.update_delivery(delivery_id=delivery.delivery_id,
                                   status="failed" if final else "pending", attempts=attempt,
                                   last_status=status, last_error=error)
        if not final:
            self._enqueue(delivery, attempt + 1, self.backoff_s * 2 ** (attempt - 1))

    def close(self) -> None:
        self._unsubscribe()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
