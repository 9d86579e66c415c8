"""The local executor: one worker subprocess per run (``python -m workbench.executors.worker``).

Training in a separate process keeps the server responsive (no GIL contention with request
handling) and makes a crashing run harmless. The spec goes to the worker's stdin as one JSON
line; events come back as JSON lines on its stdout and are handed to the sink from a reader
thread. Cancel is a ``{"op": "cancel"}`` line (the engine checks it every step). A worker that
exits without a terminal event is reported as ``run.failed`` with its exit code and the tail of
its stderr.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO

from .. import events as ev
from ..train.job import RunSpec
from .base import LiveHandles

log = logging.getLogger(__name__)

WORKER_MODULE = "workbench.executors.worker"
_STDERR_TAIL_LINES = 20


class LocalRunHandle:
    """A running worker process and the threads that read it."""

    def __init__(self, spec: RunSpec, sink: ev.Sink, *, env: dict[str, str] | None = None):
        self.run_id = spec.run_id
        self._sink = sink
        self._done = threading.Event()
        self._terminal_seen = False
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._stdin_lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", bufsize=1, env=env,
            # Own process group: a Ctrl-C in the server's terminal is the server's to handle.
            start_new_session=True,
        )
        assert self.process.stdin is not None
        self._send(spec.model_dump_json())
        self._stderr_thread = threading.Thread(
            target=self._read_stderr, name=f"worker-stderr-{self.run_id}", daemon=True
        )
        self._stderr_thread.start()
        self._reader = threading.Thread(
            target=self._read_events, name=f"worker-events-{self.run_id}", daemon=True
        )
        self._reader.start()

    # -- protocol -------------------------------------------------------------------------------
    def _send(self, line: str) -> None:
        with self._stdin_lock:
            stdin = self.process.stdin
            if stdin is None or stdin.closed:
                return
            try:
                stdin.write(line + "\n")
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the worker is gone; the reader reports how it ended

    def _read_stderr(self) -> None:
        stream: IO[str] | None = self.process.stderr
        if stream is None:
            return
        for line in stream:
            line = line.rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("worker %s: %s", self.run_id, line)

    def _deliver(self, event: ev.Event) -> None:
        try:
            self._sink(event)
        except Exception:  # a failing sink must not kill the reader (later events matter)
            log.exception("sink failed on %s event of %s", event.get("type"), self.run_id)

    def _read_events(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        try:
            for line in stream:
                if self._terminal_seen:
                    continue  # nothing may follow a terminal event
                try:
                    event = json.loads(line)
                except ValueError:
                    self._stderr_tail.append(f"(non-event stdout) {line.strip()[:200]}")
                    continue
                if not isinstance(event, dict) or event.get("run_id") != self.run_id:
                    continue
                self._terminal_seen = event.get("type") in ev.ENDS_EXECUTION
                self._deliver(event)
        finally:
            code = self.process.wait()
            self._stderr_thread.join(timeout=5)
            if not self._terminal_seen:
                self._terminal_seen = True
                self._deliver(ev.make_event(ev.RUN_FAILED, self.run_id, error=self._death(code)))
            with self._stdin_lock:
                try:
                    if self.process.stdin:
                        self.process.stdin.close()
                except OSError:
                    pass
            self._done.set()

    def _death(self, code: int) -> str:
        how = (
            f"killed by signal {signal.Signals(-code).name}" if code < 0 and -code in
            signal.valid_signals() else f"exited with code {code}"
        )
        tail = " | ".join(list(self._stderr_tail)[-5:])
        return f"worker process {how} before the run finished" + (f": {tail}" if tail else "")

    # -- RunHandle ----------------------------------------------------------------------------
    def cancel(self) -> None:
        self._send('{"op": "cancel"}')

    def pause(self) -> None:
        """Checkpoint at the end of the current epoch and end with ``run.paused``."""
        self._send('{"op": "pause"}')

    def kill(self) -> None:
        """Hard stop (the run is then reported failed with the signal)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()

    def join(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class LocalExecutor:
    """Runs each spec in its own worker process on this machine."""

    kind = "local"

    def __init__(self, *, env: dict[str, str] | None = None):
        self._env = env
        self._handles = LiveHandles()

    def submit(self, spec: RunSpec, sink: ev.Sink) -> LocalRunHandle:
        return self._handles.add(LocalRunHandle(RunSpec.model_validate(spec), sink,
                                                env=self._env))

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every live run, wait up to ``timeout`` s, then kill what is left."""
        self._handles.close(timeout)
