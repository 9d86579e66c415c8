"""What the kernel executors share: the code a Jupyter kernel runs, and how its output becomes
training events again.

Inside the kernel, ``workbench.train.job.execute`` runs with a sink that publishes every event as
a ``display_data`` message under a workbench-specific MIME type (:data:`EVENT_MIME`); user
``print``s and warnings travel on other channels and never mix with events. The executor reads
the kernel's iopub messages (over ZMQ for a local kernel, over the Jupyter Server websocket for a
remote one) and feeds them to :class:`KernelRun`, which turns them back into events for the
executor's sink and guarantees exactly one terminal event per run:

- the kernel's own terminal event (completed / failed / cancelled) when it sent one;
- ``run.cancelled`` when the run was interrupted on request (``KeyboardInterrupt`` inside the
  engine is caught kernel-side and reported as cancelled, never as failed);
- ``run.failed`` with a reason otherwise (kernel died, node unreachable, an error outside the
  engine). Epoch events delivered before that stay delivered.

Nothing here writes to the store: the server applies the events it receives.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from .. import events as ev
from ..train.job import RunSpec

log = logging.getLogger(__name__)

EVENT_MIME = "application/vnd.nn-workbench.event+json"
INSTALL_HINT = (
    "the workbench package is not installed in this kernel's Python ({python}): install it "
    "there with `pip install nn-workbench` (or `pip install <path to the nn-workbench wheel>`) "
    "and try again. Import error: {error}"
)

# Runs inside the kernel. One function so the kernel's namespace gets a single, removed name;
# the spec travels as a JSON string literal (no pickling, no shared filesystem needed).
_KERNEL_TEMPLATE = '''
def __nn_workbench_run(spec_json, mime, install_hint):
    import json, sys, time
    from IPython.display import publish_display_data
    state = {"epoch": 0, "terminal": False}
    spec = json.loads(spec_json)

    def emit(event):
        if event.get("type") in ("run.completed", "run.failed", "run.cancelled"):
            state["terminal"] = True
        elif event.get("type") == "epoch":
            state["epoch"] = event.get("data", {}).get("epoch", state["epoch"])
        publish_display_data({mime: event})

    def make(type_, **data):
        return {"type": type_, "run_id": spec["run_id"], "time": time.time(), "data": data}

    try:
        try:
            from workbench.train import job
        except ImportError as exc:
            emit(make("run.failed", error=install_hint.format(python=sys.executable, error=exc)))
            return
        # the local worker's thread policy (CPU results depend on it); older versions lack it
        getattr(job, "set_training_threads", lambda: None)()
        execute = job.execute
        try:
            execute(spec, sink=emit)
        except Exception:
            pass  # the engine already reported it as run.failed
    except KeyboardInterrupt:  # the executor interrupted the kernel: a cancel, not a failure
        if not state["terminal"]:
            emit(make("run.cancelled", epoch=state["epoch"] + 1, interrupted=True))


try:
    __nn_workbench_run(__SPEC__, __MIME__, __HINT__)
finally:
    del __nn_workbench_run
'''


def kernel_code(spec: RunSpec) -> str:
    """Python source that trains ``spec`` inside a kernel, publishing events as display data."""
    # Defaults left out: a kernel with an older workbench still accepts specs that use none
    # of the newer fields.
    values = {"__SPEC__": spec.model_dump_json(exclude_defaults=True), "__MIME__": EVENT_MIME,
              "__HINT__": INSTALL_HINT}
    # One pass, so a placeholder-like string inside the spec is never substituted.
    return re.sub("__SPEC__|__MIME__|__HINT__", lambda m: repr(values[m[0]]), _KERNEL_TEMPLATE)


def parent_id(msg: dict[str, Any]) -> str | None:
    return (msg.get("parent_header") or {}).get("msg_id")


class KernelRun:
    """Turns one execution's iopub messages into events for ``sink``, ending with exactly one
    terminal event. Thread-safe: ``cancel_requested`` may be set from another thread."""

    def __init__(self, run_id: str, sink: ev.Sink):
        self.run_id = run_id
        self._sink = sink
        self.msg_id: str | None = None
        self.epochs_delivered = 0
        self.terminal: str | None = None
        self.cancel_requested = threading.Event()
        self._error: str | None = None
        self._stderr: list[str] = []
        self._lock = threading.Lock()

    # -- delivery -------------------------------------------------------------------------------

    def deliver(self, event: ev.Event) -> None:
        """Forward one event; anything after the terminal event is dropped."""
        with self._lock:
            if self.terminal is not None:
                return
            if event.get("type") in ev.ENDS_EXECUTION:
                self.terminal = event["type"]
            elif event.get("type") == ev.EPOCH:
                self.epochs_delivered += 1
        try:
            self._sink(event)
        except Exception:  # a broken sink must not stop the stream (or hide the terminal event)
            log.exception("event sink failed on %s of run %s", event.get("type"), self.run_id)

    def fail(self, reason: str) -> None:
        """End the run as failed with ``reason`` (no-op if it already ended)."""
        self.deliver(ev.make_event(ev.RUN_FAILED, self.run_id, error=reason))

    def cancelled(self) -> None:
        self.deliver(ev.make_event(ev.RUN_CANCELLED, self.run_id, epoch=self.epochs_delivered + 1))

    @property
    def finished(self) -> bool:
        return self.terminal is not None

    # -- iopub ----------------------------------------------------------------------------------

    def on_iopub(self, msg: dict[str, Any]) -> bool:
        """Handle one iopub message; True once our execution is over (kernel back to idle).

        Raises :class:`KernelDied` when the kernel restarts or dies.
        """
        kind = msg.get("msg_type") or (msg.get("header") or {}).get("msg_type")
        content = msg.get("content") or {}
        if kind == "status" and content.get("execution_state") in ("restarting", "dead"):
            raise KernelDied(f"the kernel died ({content['execution_state']})")
        if self.msg_id is None or parent_id(msg) != self.msg_id:
            return False  # another client's traffic on a shared kernel
        if kind in ("display_data", "update_display_data"):
            event = (content.get("data") or {}).get(EVENT_MIME)
            if isinstance(event, str):  # some transports send JSON MIME bundles as text
                event = json.loads(event)
            if isinstance(event, dict):
                self.deliver(event)
        elif kind == "error":
            self._error = f"{content.get('ename')}: {content.get('evalue')}"
        elif kind == "stream" and content.get("name") == "stderr":
            self._stderr = (self._stderr + content.get("text", "").splitlines())[-5:]
        elif kind == "status" and content.get("execution_state") == "idle":
            self._execution_over()
            return True
        return False

    def _execution_over(self) -> None:
        if self.finished:
            return
        if self.cancel_requested.is_set() or (self._error or "").startswith("KeyboardInterrupt"):
            self.cancelled()
            return
        detail = self._error or "; ".join(self._stderr) or "no result was reported"
        self.fail(f"the kernel finished without a terminal event: {detail}")

    def epochs_note(self) -> str:
        n = self.epochs_delivered
        return f"{n} finished epoch{'s' if n != 1 else ''} kept"


class KernelDied(RuntimeError):
    """The kernel process died or was restarted under a running execution."""


class KernelRunHandle:
    """The ``RunHandle`` of a run executing in a kernel: a worker thread plus a cancel hook."""

    def __init__(self, run: KernelRun, interrupt: Callable[[], None]):
        self.run_id = run.run_id
        self._run = run
        self._interrupt = interrupt
        self._thread: threading.Thread | None = None
        self._finished = threading.Event()

    def start(self, target: Callable[[], None], name: str) -> KernelRunHandle:
        def body() -> None:
            try:
                target()
            except Exception as exc:  # last resort: the run must still end
                log.exception("kernel executor thread failed for %s", self.run_id)
                self._run.fail(f"executor error: {type(exc).__name__}: {exc}")
            finally:
                self._finished.set()

        self._thread = threading.Thread(target=body, name=name, daemon=True)
        self._thread.start()
        return self

    def cancel(self) -> None:
        if self._run.finished or self._run.cancel_requested.is_set():
            return
        self._run.cancel_requested.set()
        try:
            self._interrupt()
        except Exception as exc:  # e.g. kernel not started yet: the worker sees the flag
            log.debug("interrupt of %s failed: %s", self.run_id, exc)

    def join(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    @property
    def epochs_delivered(self) -> int:
        return self._run.epochs_delivered


class LiveRuns:
    """The runs a kernel executor has in flight: registered on submit, dropped when their
    thread ends, all cancelled and awaited on close."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handles: dict[str, KernelRunHandle] = {}
        self.closed = False

    def add(self, handle: KernelRunHandle) -> KernelRunHandle:
        if self.closed:
            raise RuntimeError("this executor was closed")
        with self._lock:
            self._handles[handle.run_id] = handle
        return handle

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._handles.pop(run_id, None)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._handles)

    def close(self, timeout: float = 15) -> None:
        self.closed = True
        with self._lock:
            live = list(self._handles.values())
        for handle in live:
            handle.cancel()
        for handle in live:
            handle.join(timeout=timeout)
