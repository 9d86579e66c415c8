"""Train on a kernel of a registered (remote) Jupyter Server.

The server is reached the way JupyterLab reaches it: its REST API starts, interrupts and deletes
kernels (``POST /api/kernels``, ``POST /api/kernels/{id}/interrupt``, ``DELETE``), and the kernel's
websocket (``/api/kernels/{id}/channels``, Jupyter message protocol v5 as JSON text frames) carries
the execute request out and the run's events back. Every request sends the server's token
(``Authorization: token ...``).

    executor = RemoteKernelExecutor("http://gpu-box:8888", token="...")
    handle = executor.submit(spec, sink=store.apply_event)

Results come back only as events (``run.completed`` carries the trained weights as base64
safetensors); the kernel never sees the store. A server that stops answering mid-run ends the run
as ``run.failed`` with the reason, keeping the epochs already delivered.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from ..events import Sink
from ..train.job import RunSpec
from .kernel_protocol import KernelDied, KernelRun, KernelRunHandle, LiveRuns, kernel_code

log = logging.getLogger(__name__)

_RECV_POLL_S = 1.0
_RECONNECTS = 3  # a dropped websocket on a live server is re-opened; the server replays buffers


class NodeError(RuntimeError):
    """A Jupyter Server answered, but not as expected."""


class NodeAuthError(NodeError):
    """The server refused the token (HTTP 401/403)."""


class NodeUnreachableError(NodeError):
    """No answer from the server (connection refused, DNS, timeout, TLS)."""


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/base]`` without a trailing slash; ValueError otherwise."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"url must be the Jupyter Server's http(s):// address (e.g. http://host:8888), "
            f"got {url!r}"
        )
    if parts.query or parts.fragment:
        raise ValueError("url must not carry a query or fragment; pass the token separately")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class JupyterServerClient:
    """The few REST calls the workbench needs from a Jupyter Server, with its token."""

    def __init__(self, url: str, token: str, *, timeout: float = 10.0):
        self.url = normalize_url(url)
        self.token = token
        self.timeout = timeout

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = httpx.request(
                method, self.url + path, headers=self.headers,
                timeout=kwargs.pop("timeout", self.timeout), **kwargs,
            )
        except httpx.HTTPError as exc:
            raise NodeUnreachableError(
                f"Jupyter Server {self.url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code in (401, 403):
            raise NodeAuthError(
                f"Jupyter Server {self.url} refused the token (HTTP {response.status_code}); "
                "check the token it was started with (`jupyter server list` on that machine)"
            )
        if response.status_code >= 400:
            # The status only: the body of whatever answered is never echoed to a caller.
            log.info("Jupyter Server %s: %s %s answered HTTP %s: %.200s", self.url, method,
                     path, response.status_code, response.text)
            raise NodeError(
                f"Jupyter Server {self.url}: {method} {path} answered HTTP {response.status_code}"
            )
        return response

    def status(self) -> dict[str, Any]:
        """``GET /api/status``: started, last_activity, connections, kernels."""
        return self.request("GET", "/api/status").json()

    def version(self) -> str:
        return str(self.request("GET", "/api").json().get("version", "unknown"))

    def kernels(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/kernels").json()

    def start_kernel(self, name: str | None = None) -> str:
        body = {"name": name} if name else {}
        return str(self.request("POST", "/api/kernels", json=body, timeout=120).json()["id"])

    def interrupt_kernel(self, kernel_id: str) -> None:
        self.request("POST", f"/api/kernels/{quote(kernel_id)}/interrupt")

    def shutdown_kernel(self, kernel_id: str) -> None:
        self.request("DELETE", f"/api/kernels/{quote(kernel_id)}", timeout=30)

    def channels(self, kernel_id: str, *, session_id: str | None = None) -> KernelChannels:
        return KernelChannels(self, kernel_id, session_id=session_id)


class KernelChannels:
    """The websocket of one kernel: send shell requests, receive iopub/shell messages as dicts."""

    def __init__(self, client: JupyterServerClient, kernel_id: str, *, session_id: str | None = None):
        self.client = client
        self.kernel_id = kernel_id
        self.session = Session(username="nn-workbench", session=session_id or uuid.uuid4().hex)
        self._ws: ClientConnection | None = None
        self.open()

    @property
    def url(self) -> str:
        base = self.client.url.replace("http", "ws", 1)  # http->ws, https->wss
        return (
            f"{base}/api/kernels/{quote(self.kernel_id)}/channels"
            f"?session_id={quote(self.session.session)}"
        )

    def open(self) -> None:
        try:
            # Legacy JSON protocol (no subprotocol): every message is one JSON text frame.
            self._ws = connect(
                self.url, additional_headers=self.client.headers, max_size=None,
                open_timeout=self.client.timeout, proxy=None,
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise NodeAuthError(f"Jupyter Server {self.client.url} refused the token") from exc
            raise NodeError(
                f"kernel {self.kernel_id} websocket on {self.client.url}: HTTP {code}"
            ) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise NodeUnreachableError(
                f"Jupyter Server {self.client.url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc

    def execute(self, code: str) -> str:
        content = {"code": code, "silent": False, "store_history": False,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
        msg = self.session.msg("execute_request", content)
        msg["channel"] = "shell"
        assert self._ws is not None
        self._ws.send(json.dumps(msg, default=json_default))
        return str(msg["header"]["msg_id"])

    def recv(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after ``timeout`` seconds; raises ``ConnectionClosed``."""
        assert self._ws is not None
        try:
            frame = self._ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        if isinstance(frame, bytes):
            return None  # binary frames carry buffers (widgets); events are JSON text
        msg = json.loads(frame)
        msg.setdefault("msg_type", (msg.get("header") or {}).get("msg_type"))
        return msg

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:
                pass
            self._ws = None


def run_snippet(
    client: JupyterServerClient, code: str, *, mime: str, timeout: float = 120.0,
    kernel_name: str | None = None,
) -> dict[str, Any]:
    """Run ``code`` in a fresh kernel on the server and return the first ``mime`` display data it
    publishes (the probes use this). Raises NodeError with the kernel's error otherwise."""
    kernel_id = client.start_kernel(kernel_name)
    try:
        channels = client.channels(kernel_id)
        try:
            msg_id = channels.execute(code)
            deadline = time.monotonic() + timeout
            found: dict[str, Any] | None = None
            error = None
            while time.monotonic() < deadline:
                try:
                    msg = channels.recv(timeout=_RECV_POLL_S)
                except ConnectionClosed as exc:
                    raise NodeUnreachableError(
                        f"Jupyter Server {client.url} closed the kernel connection: {exc}"
                    ) from exc
                if msg is None or (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg.get("content") or {}
                if kind in ("display_data", "execute_result") and mime in content.get("data", {}):
                    found = content["data"][mime]
                elif kind == "error":
                    error = f"{content.get('ename')}: {content.get('evalue')}"
                elif kind == "status" and content.get("execution_state") == "idle":
                    break
            if found is not None:
                return found if isinstance(found, dict) else json.loads(found)
            raise NodeError(
                f"probe on {client.url} returned nothing: {error or 'timed out'}"
            )
        finally:
            channels.close()
    finally:
        try:
            client.shutdown_kernel(kernel_id)
        except NodeError:
            pass


class RemoteKernelExecutor:
    """Runs each spec in its own kernel on one Jupyter Server; see the module docstring."""

    kind = "node"

    def __init__(
        self,
        url: str,
        token: str,
        *,
        node_id: str | None = None,
        kernel_name: str | None = None,
        on_unreachable: Callable[[str], object] | None = None,
        timeout: float = 10.0,
    ):
        self.client = JupyterServerClient(url, token, timeout=timeout)
        self.node_id = node_id
        self.kernel_name = kernel_name  # None: the server's default kernel
        self.on_unreachable = on_unreachable  # told the reason when the server stops answering
        self._live = LiveRuns()

    @property
    def name(self) -> str:
        return self.node_id or self.client.url

    def submit(self, spec: RunSpec, sink: Sink) -> KernelRunHandle:
        run = KernelRun(spec.run_id, sink)
        box: dict[str, str] = {}

        def interrupt() -> None:
            if "kernel_id" in box:
                self.client.interrupt_kernel(box["kernel_id"])

        handle = self._live.add(KernelRunHandle(run, interrupt))
        return handle.start(lambda: self._work(spec, run, box), name=f"node-{spec.run_id}")

    def live_runs(self) -> list[str]:
        return self._live.ids()

    def close(self) -> None:
        self._live.close()

    # -- one run --------------------------------------------------------------------------------

    def _work(self, spec: RunSpec, run: KernelRun, box: dict[str, str]) -> None:
        try:
            kernel_id = self.client.start_kernel(self.kernel_name)
        except NodeError as exc:
            self._unreachable(run, exc, starting=True)
            return
        box["kernel_id"] = kernel_id
        channels: KernelChannels | None = None
        reachable = True
        try:
            channels = self.client.channels(kernel_id)
            if run.cancel_requested.is_set():
                run.cancelled()
                return
            run.msg_id = channels.execute(kernel_code(spec))
            reachable = self._stream(channels, run)
        except NodeError as exc:
            reachable = not isinstance(exc, NodeUnreachableError)
            self._unreachable(run, exc)
        finally:
            if channels is not None:
                channels.close()
            if reachable:
                try:
                    self.client.shutdown_kernel(kernel_id)
                except NodeError as exc:
                    log.debug("shutdown of kernel %s on %s: %s", kernel_id, self.name, exc)
            self._live.discard(spec.run_id)

    def _stream(self, channels: KernelChannels, run: KernelRun) -> bool:
        """Feed messages to ``run`` until it ends; False if the server became unreachable."""
        reconnects = 0
        while True:
            try:
                msg = channels.recv(timeout=_RECV_POLL_S)
            except ConnectionClosed as exc:
                try:
                    self.client.status()
                except NodeError as probe:
                    self._unreachable(run, probe, lost=exc)
                    return False
                if reconnects >= _RECONNECTS:
                    run.fail(f"lost the kernel connection to node {self.name} {reconnects} "
                             f"times ({exc}); {run.epochs_note()}")
                    return True
                reconnects += 1
                channels.close()
                channels.open()  # same session id: the server replays what it buffered
                continue
            if msg is None:
                continue
            try:
                if run.on_iopub(msg):
                    return True
            except KernelDied as exc:
                run.fail(f"{exc} on node {self.name}; {run.epochs_note()}")
                return True

    def _unreachable(
        self, run: KernelRun, exc: Exception, *, starting: bool = False,
        lost: Exception | None = None,
    ) -> None:
        when = "before the run could start" if starting else "during the run"
        if isinstance(exc, NodeUnreachableError):
            reason = f"node {self.name} became unreachable {when}: {exc}"
            if self.on_unreachable is not None:
                try:
                    self.on_unreachable(reason)
                except Exception:
                    log.exception("on_unreachable hook failed")
        else:
            reason = f"node {self.name} failed {when}: {exc}"
        if lost is not None:
            reason += f" (connection closed: {lost})"
        run.fail(f"{reason}; {run.epochs_note()}")
