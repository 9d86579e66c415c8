"""The worker process of the local executor: ``python -m workbench.executors.worker``.

Protocol (all JSON lines, UTF-8):
- stdin, first line: the ``RunSpec``. Later lines: ``{"op": "cancel"}``, ``{"op": "pause"}``
  (checkpoint at the end of the current epoch, then ``run.paused``). End of stdin (the
  server went away) also stops the run, so a killed server leaves no orphaned training.
- stdout: one event per line, exactly the dicts the engine emits (``workbench.events``).

Anything the engine or libraries print goes to stderr (stdout is reserved for events); the
executor keeps the tail of stderr to explain a worker that dies.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import IO, Any


def _watch_stdin(stream: IO[str], stop: threading.Event, pause: threading.Event) -> None:
    # Any cancel message, or EOF, stops the run at the engine's next step.
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("op") == "cancel":
            stop.set()
        elif isinstance(message, dict) and message.get("op") == "pause":
            pause.set()
    stop.set()


def main() -> int:
    events_out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr  # stray prints must not corrupt the event stream
    first = sys.stdin.readline()
    if not first:
        return 2
    spec: dict[str, Any] = json.loads(first)
    stop, pause = threading.Event(), threading.Event()
    threading.Thread(target=_watch_stdin, args=(sys.stdin, stop, pause), daemon=True).start()
    lock = threading.Lock()

    def sink(event: dict[str, Any]) -> None:
        line = json.dumps(event, allow_nan=False, default=str)
        with lock:
            events_out.write(line + "\n")
            events_out.flush()

    from workbench.train.job import execute, set_training_threads

    # Leave one core to the server that reads our events and answers status polls.
    set_training_threads()
    from workbench.config import get_settings

    if nice := get_settings().worker_nice:
        os.nice(nice)

    try:
        execute(spec, sink=_nan_safe(sink), should_stop=stop.is_set, should_pause=pause.is_set)
    except Exception:  # already reported as a run.failed event by execute/train
        return 1
    return 0


def _nan_safe(sink):
    """JSON has no NaN/inf: a diverging run's loss becomes null rather than a broken line."""
    import math

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return lambda event: sink(clean(event))


if __name__ == "__main__":
    sys.exit(main())
