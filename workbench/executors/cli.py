"""``workbench train --target T [--strategy ddp --world-size N]``: train somewhere else than
in the CLI's own process.

When a ``workbench serve`` owns the store (``WORKBENCH_SERVER_URL`` or the server-info file in
``WORKBENCH_HOME``), the run goes through its REST API (``WORKBENCH_TOKEN`` as the key) and its
status is polled; otherwise the CLI opens the store, installs the compute targets and queues the
run on its own ``Workbench``, printing progress from the event bus.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def add_target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="local",
                   help="local | local-kernel | distributed | a registered node id")
    p.add_argument("--strategy", default="single", choices=["single", "ddp", "pipeline"],
                   help="ddp / pipeline: train on torch.distributed ranks")
    p.add_argument("--world-size", type=int, help="ranks of a ddp / pipeline run (default 2)")


def wants_target(args: argparse.Namespace) -> bool:
    return getattr(args, "target", "local") != "local" or getattr(args, "strategy",
                                                                   "single") != "single"


def train_on_target(args: argparse.Namespace, architecture: dict[str, Any],
                    hyperparams: dict[str, Any]) -> int:
    """Queue the run on ``args.target``, wait for it, print a summary; the exit code."""
    from ..jupyter.discovery import running_server

    server = running_server()
    try:
        run = _via_server(server.url, server.token, args, architecture, hyperparams) \
            if server else _via_store(args, architecture, hyperparams)
    except ValueError as exc:
        print(f"workbench train: {exc}", file=sys.stderr)
        return 2
    keys = ("run_id", "model_id", "state", "target", "device", "epoch", "param_id", "error")
    summary = {k: run.get(k) for k in keys if run.get(k) is not None}
    for name in ("train_loss", "val_accuracy", "samples_per_s", "total_tflops"):
        if (run.get("metrics") or {}).get(name) is not None:
            summary[name] = run["metrics"][name]
    from ..cli import _print_summary

    _print_summary(summary)
    return 0 if run.get("state") == "succeeded" else 1


def _via_server(url: str, token: str | None, args: argparse.Namespace,
                architecture: dict[str, Any], hyperparams: dict[str, Any]) -> dict[str, Any]:
    from ..client import ApiError, Client

    client = Client(url, token)
    try:
        model = client.create_model(architecture, hyperparams)
        queued = client.train(model["model_id"], dataset=args.dataset, limit=args.limit,
                              device=args.device, target=args.target, strategy=args.strategy,
                              world_size=args.world_size)
    except ApiError as exc:
        raise ValueError(str(exc)) from None
    print(f"run {queued['run_id']} on {args.target} via {url}", file=sys.stderr)
    seen = -1
    while True:
        run = client.get_run(queued["run_id"])
        if run["epoch"] != seen:
            seen = run["epoch"]
            print(f"  epoch {seen}/{run['epochs_total']} ({run['state']})", file=sys.stderr)
        if run["state"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.5)


def _via_store(args: argparse.Namespace, architecture: dict[str, Any],
               hyperparams: dict[str, Any]) -> dict[str, Any]:
    from ..api.views import run_view
    from ..cli import ProgressSink, _open_workbench
    from .registry import install
    from .targets import choose

    wb = _open_workbench()
    try:
        install(wb)
        target, overrides = choose(args.target, strategy=args.strategy,
                                   world_size=args.world_size)
        model = wb.create_model(architecture, hyperparams)
        run = wb.start_run(model.model_id, dataset=args.dataset, limit=args.limit,
                           device=args.device, target=target, spec_overrides=overrides or None)
        print(f"run {run.run_id} on {target}", file=sys.stderr)
        unsubscribe = wb.bus.subscribe(ProgressSink(), run_id=run.run_id)
        try:
            return run_view(wb.wait_run(run.run_id))
        except KeyboardInterrupt:
            return run_view(wb.wait_run(wb.cancel_run(run.run_id).run_id, timeout=30))
        finally:
            unsubscribe()
    finally:
        wb.close()
