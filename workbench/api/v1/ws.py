"""``/api/v1/ws``: live events over a websocket (Cortex/neurogrid style).

    -> {"type": "auth", "token": "<api key>"}            (or connect with ?token=<api key>)
    <- {"type": "auth.ok", "key_id": ...}
    -> {"type": "subscribe", "channel": "jobs", "task_id": "r_..."}   (task_id/job_id optional)
    <- {"type": "subscribed", "channel": "jobs"}
    <- {"type": "task.started" | "task.progress" | "task.completed" | "task.failed"
        | "task.cancelled", "channel": "jobs", "task_id", "job_id", "time", "data": {...}}

Channels: ``jobs`` (aliases ``runs``, ``training``, ``tasks``): the training events of the
service's ``EventBus`` -- one ``task.progress`` per epoch (``data.kind == "epoch"``) plus step
progress throttled to two a second per task (``kind == "step"``); ``networks`` (alias
``nodes``): ``node.*`` events; ``system``: ``system.*`` events and a ``system.alert`` when a task
fails. A socket that does not authenticate within 10 s, or with a bad key, gets an error message
and is closed (1008). A browser ``Origin`` must match the ``Host`` (or be listed in
``app.state.v1_allowed_origins``), else the handshake is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ... import events as ev
from .conventions import AUTH_INVALID, FORBIDDEN, VALIDATION_ERROR
from .security import granted
from .views import JOB_STATUS, job_id, run_id_of

log = logging.getLogger(__name__)

router = APIRouter()

CHANNELS = {"jobs": "jobs", "runs": "jobs", "training": "jobs", "tasks": "jobs",
            "networks": "networks", "nodes": "networks", "system": "system"}
_AUTH_TIMEOUT_S = 10.0
_STEP_INTERVAL_S = 0.5
_QUEUE_MAX = 10_000
_POLICY_VIOLATION = 1008


def origin_allowed(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:  # not a browser: nothing to protect against
        return True
    allowed = getattr(websocket.app.state, "v1_allowed_origins", ()) or ()
    if origin in allowed:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


class Translator:
    """Bus events -> websocket messages, per connection (step throttling, epochs_total)."""

    def __init__(self) -> None:
        self._last_step: dict[str, float] = {}
        self._epochs_total: dict[str, int] = {}

    def __call__(self, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        kind = str(event.get("type", ""))
        run_id = event.get("run_id")
        data = event.get("data") or {}
        if kind.startswith("node."):
            return [("networks", {"type": kind, "node_id": event.get("node_id"), "data": data,
                                  "time": event.get("time")})]
        if kind.startswith("system."):
            return [("system", {"type": kind, "data": data, "time": event.get("time")})]
        if not isinstance(run_id, str):
            return []
        if kind == ev.RUN_STARTED:
            if isinstance(data.get("epochs_total"), int):
                self._epochs_total[run_id] = data["epochs_total"]
            return [self._task("task.started", event, {**data, "status": JOB_STATUS["running"]})]
        if kind == ev.EPOCH:
            payload = {"kind": "epoch", **data}
            if run_id in self._epochs_total:
                payload["epochs_total"] = self._epochs_total[run_id]
            return [self._task("task.progress", event, payload)]
        if kind == ev.STEP:
            now = time.monotonic()
            if now - self._last_step.get(run_id, float("-inf")) < _STEP_INTERVAL_S:
                return []
            self._last_step[run_id] = now
            return [self._task("task.progress", event, {"kind": "step", **data})]
        if kind in ev.TERMINAL:
            self._last_step.pop(run_id, None)
            self._epochs_total.pop(run_id, None)
        if kind == ev.RUN_COMPLETED:
            payload = {k: v for k, v in data.items() if k != "parameters_safetensors_b64"}
            return [self._task("task.completed", event, payload)]
        if kind == ev.RUN_FAILED:
            alert = {"type": "system.alert", "time": event.get("time"),
                     "data": {"level": "warning", "task_id": run_id,
                              "message": f"task {run_id} failed: {data.get('error')}"}}
            return [self._task("task.failed", event, data), ("system", alert)]
        if kind == ev.RUN_CANCELLED:
            return [self._task("task.cancelled", event, data)]
        return []

    @staticmethod
    def _task(kind: str, event: dict[str, Any], data: dict[str, Any]) -> tuple[str, dict]:
        run_id = event["run_id"]
        return "jobs", {"type": kind, "task_id": run_id, "job_id": job_id(run_id),
                        "time": event.get("time"), "data": data}


async def _authenticate(websocket: WebSocket) -> Any:
    token = websocket.query_params.get("token")
    if not token:
        try:
            first = await asyncio.wait_for(websocket.receive_json(), _AUTH_TIMEOUT_S)
        except (TimeoutError, ValueError, KeyError):
            first = None
        if not isinstance(first, dict) or first.get("type") != "auth":
            return await _refuse(websocket, AUTH_INVALID, "authenticate first: "
                                 '{"type": "auth", "token": "<api key>"}')
        token = first.get("token")
    record = websocket.app.state.keyring.verify(token if isinstance(token, str) else None)
    if record is None:
        return await _refuse(websocket, AUTH_INVALID, "invalid, revoked or expired API key")
    if "read" not in granted(record.permissions):
        return await _refuse(websocket, FORBIDDEN, "this API key lacks the 'read' permission")
    return record


async def _refuse(websocket: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", "error": {"code": code, "message": message}})
        await websocket.close(code=_POLICY_VIOLATION, reason=code)
    return None


@router.websocket("/ws")
async def events_socket(websocket: WebSocket) -> None:
    if not origin_allowed(websocket):
        await websocket.close(code=_POLICY_VIOLATION)  # before accept: the handshake gets 403
        return
    await websocket.accept()
    record = await _authenticate(websocket)
    if record is None:
        return
    await websocket.send_json({"type": "auth.ok", "key_id": record.key_id,
                               "channels": sorted(set(CHANNELS.values()))})
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_QUEUE_MAX)
    subscriptions: dict[str, str | None] = {}  # channel -> run id filter (None: all)

    def put(event: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(event)

    def on_event(event: dict[str, Any]) -> None:  # called on executor threads
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(put, event)

    unsubscribe = websocket.app.state.service.bus.subscribe(on_event)
    sender = asyncio.create_task(_send_loop(websocket, queue, subscriptions))
    try:
        while True:
            message = await websocket.receive_json()
            reply = _handle(message, subscriptions)
            if reply is not None:
                await websocket.send_json(reply)
    except (WebSocketDisconnect, RuntimeError):
        pass
    except ValueError:  # not JSON
        with contextlib.suppress(Exception):
            await websocket.close(code=1003)
    finally:
        unsubscribe()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


def _handle(message: Any, subscriptions: dict[str, str | None]) -> dict[str, Any] | None:
    if not isinstance(message, dict):
        return _error(VALIDATION_ERROR, "messages are JSON objects with a 'type'", "type")
    kind = message.get("type")
    if kind == "ping":
        return {"type": "pong"}
    if kind == "auth":
        return {"type": "auth.ok"}
    if kind in ("subscribe", "unsubscribe"):
        channel = CHANNELS.get(str(message.get("channel")))
        if channel is None:
            return _error(VALIDATION_ERROR, f"unknown channel {message.get('channel')!r}; "
                          f"available: jobs, networks, system", "channel")
        if kind == "unsubscribe":
            subscriptions.pop(channel, None)
            return {"type": "unsubscribed", "channel": channel}
        wanted = message.get("task_id") or message.get("job_id") or message.get("run_id")
        subscriptions[channel] = run_id_of(str(wanted)) if wanted else None
        return {"type": "subscribed", "channel": channel,
                **({"task_id": subscriptions[channel]} if wanted else {})}
    return _error(VALIDATION_ERROR, f"unknown message type {kind!r}; use auth, subscribe, "
                  "unsubscribe or ping", "type")


async def send(websocket: WebSocket, message: dict[str, Any]) -> None:
    # orjson: a diverged loss (NaN) goes out as null, never as invalid JSON.
    await websocket.send_text(orjson.dumps(message).decode())


def _error(code: str, message: str, field: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message,
                                       "details": {"field": field}}}


async def _send_loop(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]],
                     subscriptions: dict[str, str | None]) -> None:
    translate = Translator()
    while True:
        event = await queue.get()
        for channel, message in translate(event):
            if channel not in subscriptions:
                continue
            wanted = subscriptions[channel]
            if wanted is not None and message.get("task_id") != wanted:
                continue
            await send(websocket, {**message, "channel": channel})
