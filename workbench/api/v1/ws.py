"""``/ws`` and ``/api/v1/ws``: live events over a websocket (Cortex/neurogrid style).

Both documents' clients connect to ``wss://host/ws``. That path is also the Panel app's
socket, whose (Bokeh) client always asks for the ``bokeh`` subprotocol; ``DocumentSocket``
sends every other ``/ws`` handshake here, so the two share the path and are told apart by
subprotocol.

    -> {"type": "auth", "token": "<api key>"}            (or connect with ?token=<api key>)
    <- {"type": "auth.ok", "key_id": ...}
    -> {"type": "subscribe", "channel": "jobs", "task_id": "r_..."}   (task_id/job_id optional)
    <- {"type": "subscribed", "channel": "jobs"}
    <- {"type": "task.started" | "task.progress" | "task.completed" | "task.failed"
        | "task.cancelled", "channel": "jobs", "task_id", "job_id", "event_id", "time",
        "data": {...}}
    -> {"type": "subscribe", "channel": "jobs", "task_id": "r_...", "last_event_id": 41}
       (after a reconnect: every event of the task after event 41, in order, then live ones --
        each exactly once)

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
from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect

from ... import events as ev
from ..policy import allows, websocket_requires
from .conventions import AUTH_INVALID, FORBIDDEN, VALIDATION_ERROR, error_type
from .views import JOB_STATUS, job_id, run_id_of

log = logging.getLogger(__name__)

router = APIRouter()

# The socket authenticates in the handler (possibly from its first message); the scope it needs
# is declared on the route and checked there with the policy.
SOCKET_SCOPE = websocket_requires("read")

CHANNELS = {"jobs": "jobs", "runs": "jobs", "training": "jobs", "tasks": "jobs",
            "networks": "networks", "nodes": "networks", "system": "system"}
_AUTH_TIMEOUT_S = 10.0
_STEP_INTERVAL_S = 0.5
_QUEUE_MAX = 10_000
_POLICY_VIOLATION = 1008
_UNSUPPORTED_DATA = 1003
_REPLAY = "__replay__"  # a queue marker: send a task's stored events before its live ones


def origin_allowed(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:  # not a browser: nothing to protect against
        return True
    allowed = getattr(websocket.app.state, "v1_allowed_origins", ()) or ()
    if origin in allowed:
        return True
    return urlsplit(origin).netloc == websocket.headers.get("host")


PATH = "/api/v1/ws"
DOCUMENT_PATH = "/ws"  # where the documents' clients connect


class DocumentSocket:
    """Pure ASGI: a websocket to ``/ws`` that does not speak Bokeh's subprotocol (the Panel
    app's) is this API's socket: its path becomes ``/api/v1/ws`` before routing."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] == "websocket" and scope.get("path") == DOCUMENT_PATH
                and "bokeh" not in (scope.get("subprotocols") or ())):
            root = scope.get("root_path", "")
            scope = {**scope, "path": PATH, "raw_path": (root + PATH).encode()}
        await self.app(scope, receive, send)


class Translator:
    """Bus events -> websocket messages, per connection (step throttling, epochs_total)."""

    def __init__(self) -> None:
        self._last_step: dict[str, float] = {}
        self._epochs_total: dict[str, int] = {}

    def __call__(self, event: dict[str, Any], *, replay: bool = False
                 ) -> list[tuple[str, dict[str, Any]]]:
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
            if not replay and now - self._last_step.get(run_id, float("-inf")) < _STEP_INTERVAL_S:
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
                        "event_id": event.get("id"), "time": event.get("time"), "data": data}


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
    scope = SOCKET_SCOPE.__policy__.scope  # type: ignore[attr-defined]
    if not allows(record, scope):
        return await _refuse(websocket, FORBIDDEN, f"this API key lacks the {scope!r} permission")
    return record


async def _refuse(websocket: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", "error": {"code": code, "message": message,
                                                               "type": error_type(code)}})
        await websocket.close(code=_POLICY_VIOLATION, reason=code)
    return None


@router.websocket("/ws", dependencies=[Depends(SOCKET_SCOPE)])
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
    replays: dict[str, int] = {}  # task id -> last event id the client saw (replay asked)
    pending: set[str] = set()  # tasks whose replay is queued but not yet sent

    def put(event: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(event)

    def on_event(event: dict[str, Any]) -> None:  # called on executor threads
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(put, event)

    unsubscribe = websocket.app.state.service.bus.subscribe(on_event)
    service = websocket.app.state.service
    sender = asyncio.create_task(_send_loop(websocket, queue, subscriptions, service, pending))
    try:
        while True:
            message = await _receive_json(websocket)
            reply = _handle(message, subscriptions, replays)
            if reply is not None:
                await websocket.send_json(reply)
            for task_id in list(replays):  # asked for a replay: the sender does it, in order
                pending.add(task_id)  # its live events already queued are in the replay too
                put({"type": _REPLAY, "run_id": task_id, "after": replays.pop(task_id)})
    except (WebSocketDisconnect, RuntimeError):
        pass
    except BinaryFrame:
        with contextlib.suppress(Exception):
            await websocket.send_json(_error(VALIDATION_ERROR, "binary frames are not supported: "
                                             "send JSON text messages", "message"))
            await websocket.close(code=_UNSUPPORTED_DATA, reason="binary frames not supported")
    except ValueError:  # not JSON
        with contextlib.suppress(Exception):
            await websocket.close(code=_UNSUPPORTED_DATA)
    finally:
        unsubscribe()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


class BinaryFrame(Exception):
    """The client sent a binary frame; this socket speaks JSON text only."""


async def _receive_json(websocket: WebSocket) -> Any:
    """The next message as JSON (``receive_json`` assumes a text frame: a binary one was a
    ``KeyError: 'text'`` out of the handler). Raises WebSocketDisconnect, BinaryFrame, or
    ValueError for text that is not JSON."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    if text is None:
        raise BinaryFrame()
    return orjson.loads(text)


def _handle(message: Any, subscriptions: dict[str, str | None],
            replays: dict[str, int]) -> dict[str, Any] | None:
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
        last_seen = message.get("last_event_id")
        if last_seen is not None and (isinstance(last_seen, bool) or not isinstance(last_seen, int)
                                      or last_seen < 0):
            return _error(VALIDATION_ERROR, "last_event_id must be a non-negative integer "
                          "(the event_id of the last message received)", "last_event_id")
        if last_seen is not None and not (channel == "jobs" and wanted):
            return _error(VALIDATION_ERROR, "last_event_id needs channel 'jobs' and a task_id "
                          "(replay is per task)", "last_event_id")
        subscriptions[channel] = run_id_of(str(wanted)) if wanted else None
        if last_seen is not None:
            replays[str(subscriptions[channel])] = last_seen
        return {"type": "subscribed", "channel": channel,
                **({"task_id": subscriptions[channel]} if wanted else {}),
                **({"replay_after": last_seen} if last_seen is not None else {})}
    return _error(VALIDATION_ERROR, f"unknown message type {kind!r}; use auth, subscribe, "
                  "unsubscribe or ping", "type")


async def send(websocket: WebSocket, message: dict[str, Any]) -> None:
    # orjson: a diverged loss (NaN) goes out as null, never as invalid JSON.
    await websocket.send_text(orjson.dumps(message).decode())


def _error(code: str, message: str, field: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message,
                                       "type": error_type(code),
                                       "details": {"field": field}}}


async def _send_loop(websocket: WebSocket, queue: asyncio.Queue[dict[str, Any]],
                     subscriptions: dict[str, str | None], service: Any,
                     pending: set[str]) -> None:
    """Send subscribed events in order. A replay (subscribe with ``last_event_id``) sends the
    task's stored events after that id, then live ones; every event carries ``event_id``, and a
    live event already sent by the replay is skipped, so each reaches the client exactly once."""
    from starlette.concurrency import run_in_threadpool

    translate = Translator()
    sent_through: dict[str, int] = {}  # task id -> last event id sent
    while True:
        event = await queue.get()
        run_id = event.get("run_id")
        if event.get("type") == _REPLAY and isinstance(run_id, str):
            pending.discard(run_id)
            stored = await run_in_threadpool(service.store.list_events, run_id,
                                             after_id=event["after"], limit=None)
            for old in stored:
                await _send_translated(websocket, translate(old, replay=True), subscriptions)
            sent_through[run_id] = stored[-1]["id"] if stored else event["after"]
            continue
        event_id = event.get("id")
        if isinstance(run_id, str) and isinstance(event_id, int):
            if run_id in pending or event_id <= sent_through.get(run_id, -1):
                continue
        await _send_translated(websocket, translate(event), subscriptions)


async def _send_translated(websocket: WebSocket, messages: list[tuple[str, dict[str, Any]]],
                           subscriptions: dict[str, str | None]) -> None:
    for channel, message in messages:
        if channel not in subscriptions:
            continue
        wanted = subscriptions[channel]
        if wanted is not None and message.get("task_id") != wanted:
            continue
        await send(websocket, {**message, "channel": channel})
