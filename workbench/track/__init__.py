"""Track your own training: runs trained by any PyTorch (or other) loop, stored and shown by
workbench like its own.

    import workbench.track as wb
    run = wb.init(name="cnn-baseline", experiment="mnist-cnn", config={"lr": 1e-3},
                  tags=["cnn"])
    wb.watch(model)                       # optional: TFLOPS and per-layer norms (torch)
    for step, (x, y) in enumerate(loader):
        ...
        wb.log({"loss": loss.item(), "acc": acc}, step=step)
    wb.finish()

    with wb.init(name="sweep-3", config=vars(args)) as run:    # failed if the block raises
        run.log({"loss": 0.5})

The same from a notebook cell (``from workbench import notebook as wb``) and from a remote
kernel: everything goes through the front door (``workbench.frontdoor.connect``) to this home's
owner, which stores the points as ``metrics`` rows and streams them to the app, notebook charts
and websocket. ``log`` only queues (about a microsecond); a background thread sends batches
every ``flush_interval`` s or ``flush_points`` points, spools them to
``$WORKBENCH_HOME/track/spool/`` while the owner is unreachable and sends them in order when it
is back -- each batch once (batch ids). System metrics (``system/...``: CPU, memory, GPU) are
sampled every ``system_interval`` s. ``finish`` flushes and waits.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import track_exit_timeout_s
from .run import FLUSH_INTERVAL_S, FLUSH_POINTS, SYSTEM_INTERVAL_S, Run, live_runs
from .run import _remember as _remember_run

__all__ = ["Run", "current_run", "finish", "init", "log", "sync", "watch"]

log_ = logging.getLogger("workbench.track")

_current: Run | None = None
_state_lock = threading.Lock()
_hooks_installed = False
_uncaught: BaseException | None = None


def _jsonable(value: Any) -> Any:
    """A config as plain JSON: argparse Namespaces, dataclasses, pydantic models and
    anything with ``__dict__`` become dicts; other values unknown to JSON become strings."""
    import dataclasses

    import orjson

    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif not isinstance(value, Mapping) and hasattr(value, "__dict__"):
        value = vars(value)
    if not isinstance(value, Mapping):
        raise TypeError(f"config: expected a dict (or a Namespace, dataclass), got "
                        f"{type(value).__name__}")
    return orjson.loads(orjson.dumps(dict(value), default=str,
                                     option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))


def _default_name() -> str:
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c") else ""
    if not script or script in ("ipykernel_launcher", "__main__"):
        script = "notebook" if "ipykernel" in sys.modules else "python"
    return f"{script}-{time.strftime('%Y%m%d-%H%M%S')}"


def _default_device() -> str | None:
    torch = sys.modules.get("torch")  # never import torch only to name the device
    if torch is None:
        return None
    try:
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
    except Exception:
        return None
    return "cpu"


def init(name: str | None = None, *, experiment: str = "default", config: Any = None,
         tags: Sequence[str] = (), device: str | None = None, client: Any = None,
         flush_interval: float = FLUSH_INTERVAL_S, flush_points: int = FLUSH_POINTS,
         system_metrics: bool = True, system_interval: float = SYSTEM_INTERVAL_S,
         start: bool = True) -> Run:
    """Start tracking a run: created on this home's owner (started on demand when ``start``
    and none runs), ``running`` until ``finish``. It becomes the current run (the one
    ``workbench.track.log`` logs to); a current run not yet finished is finished first.

    ``client``: a :class:`workbench.client.Client` of a particular server (default: the front
    door, found again after an owner restart). ``system_metrics=False`` samples nothing.
    """
    global _current
    _install_hooks()
    with _state_lock:
        previous, _current = _current, None
    if previous is not None:
        previous.finish()
    explicit = client is not None
    if client is None:
        client = _front_door(start=start)
    body = dict(name=name or _default_name(), experiment=experiment, config=_jsonable(config),
                tags=[str(t) for t in tags], device=device or _default_device())
    record = client.create_run(**body)
    reconnect = None if explicit else (lambda start_owner: _front_door(start=start_owner))
    run = Run(client, record, reconnect=reconnect, flush_interval=flush_interval,
              flush_points=flush_points,
              system_interval=system_interval if system_metrics else None)
    _remember_run(run)
    with _state_lock:
        _current = run
    return run


def _front_door(*, start: bool) -> Any:
    from ..frontdoor import connect

    # No retries inside the client: a batch that fails is spooled and retried by the run.
    return connect(start=start, quiet=True, retries=0, timeout=30.0)


def current_run() -> Run | None:
    """The run ``log`` logs to (the last ``init`` not yet finished), or None."""
    return _current


def log(data: Mapping[str, Any], step: int | None = None, *, epoch: int | None = None) -> None:
    """``current_run().log(...)``: queue ``{name: number}`` at ``step`` (see ``Run.log``)."""
    run = _current
    if run is None:
        raise RuntimeError("no current run: call workbench.track.init() first")
    run.log(data, step, epoch=epoch)


def finish(state: str = "succeeded", *, error: str | None = None,
           timeout: float | None = None) -> dict[str, Any] | None:
    """Finish the current run (flush, wait, end it); None when there is none."""
    global _current
    with _state_lock:
        run, _current = _current, None
    if run is None:
        return None
    kwargs: dict[str, Any] = {"error": error}
    if timeout is not None:
        kwargs["timeout"] = timeout
    return run.finish(state, **kwargs)


def watch(model: Any, *, run: Run | None = None, log_every: int = 100, flops: bool = True,
          norms: bool = True) -> Any:
    """Hooks on a ``torch.nn.Module``: FLOPs of one training step counted with
    ``torch.utils.flop_counter.FlopCounterMode`` on the first step, then the time per step
    gives ``perf/tflops``; every ``log_every`` steps the per-parameter weight and gradient
    norms (``weight_norm/<name>``, ``grad_norm/<name>``). Returns a handle (``.remove()``)."""
    target = run or _current
    if target is None:
        raise RuntimeError("no current run: call workbench.track.init() first")
    return target.watch(model, log_every=log_every, flops=flops, norms=norms)


def sync(home: Path | None = None, *, client: Any = None) -> dict[str, int]:
    """Send what runs of this home left in their spools (a process that was killed, or gave
    up waiting for the owner), in order, finishing those whose finish was spooled. Batches the
    owner already has are stored once. Returns ``{"files", "batches", "finished"}``."""
    from . import spool as spool_mod
    from .run import _classify, _Refused

    counts = {"files": 0, "batches": 0, "finished": 0}
    client = client or _front_door(start=True)
    for path in spool_mod.leftover(home):
        spool = spool_mod.Spool(path)
        if not spool.try_lock():
            continue  # a live run still owns it
        counts["files"] += 1
        try:
            for offset, entry in spool.entries():
                run_id = entry.get("run_id") or path.name.removesuffix(spool_mod.SUFFIX)
                try:
                    if "finish" in entry:
                        finish_args = entry["finish"] or {}
                        client.finish_run(run_id, finish_args.get("state", "succeeded"),
                                          error=finish_args.get("error"))
                        counts["finished"] += 1
                    else:
                        client.log_batch(run_id, entry.get("metrics"), columns=entry.get("columns"),
                                         batch_id=entry.get("batch_id"))
                        counts["batches"] += 1
                except Exception as exc:
                    if not isinstance(_classify(exc), _Refused):
                        raise
                    log_.warning("workbench.track.sync: %s refused an entry of %s: %s",
                                 "the owner", run_id, exc)
                spool.mark_sent(offset)
            spool.clear()
        finally:
            spool.close()
    return counts


# ---- process exit ------------------------------------------------------------------------------
def _install_hooks() -> None:
    """At exit, finish the runs left open: ``failed`` after an uncaught exception (the
    script crashed), else ``succeeded``."""
    global _hooks_installed
    with _state_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    previous = sys.excepthook

    def excepthook(kind: Any, value: Any, tb: Any) -> None:
        global _uncaught
        _uncaught = value
        previous(kind, value, tb)

    sys.excepthook = excepthook
    atexit.register(_at_exit)


def _at_exit() -> None:
    for run in live_runs():
        try:
            if _uncaught is not None:
                run.finish("failed", error=f"{type(_uncaught).__name__}: {_uncaught}",
                           timeout=track_exit_timeout_s())
            else:
                run.finish(timeout=track_exit_timeout_s())
        except Exception:
            log_.exception("workbench.track: could not finish %s at exit", run.run_id)
