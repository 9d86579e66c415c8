"""``workbench`` command line: train, runs, sql, demo (and serve, once the server exists).

    workbench train --layers 784,128,64,10 --epochs 5 --optimizer adam --lr 1e-3
    workbench runs --state succeeded
    workbench sql "SELECT name, avg(value) FROM metrics GROUP BY name"
    workbench demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

DEMO_LAYERS = "784,128,64,10"


# ---- argument helpers --------------------------------------------------------------------------
def _architecture_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from .spec import Architecture

    if args.arch:
        return json.loads(Path(args.arch).read_text())
    sizes = [int(s) for s in args.layers.split(",") if s.strip()]
    return Architecture.from_layer_sizes(sizes, num_classes=10).to_json()


def _hyperparams_from_args(args: argparse.Namespace) -> dict[str, Any]:
    hp: dict[str, Any] = json.loads(Path(args.hyperparams).read_text()) if args.hyperparams else {}
    flags = {
        "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
        "train_split": args.train_split, "early_stopping_patience": args.patience,
    }
    hp.update({k: v for k, v in flags.items() if v is not None})
    optimizer = dict(hp.get("optimizer", {}))
    for key, value in (("type", args.optimizer), ("lr", args.lr), ("momentum", args.momentum)):
        if value is not None:
            optimizer[key] = value
    if optimizer:
        hp["optimizer"] = optimizer
    return hp


def _add_train_flags(p: argparse.ArgumentParser, *, layers_default: str | None) -> None:
    p.add_argument("--layers", default=layers_default, help="layer sizes, e.g. 784,128,64,10")
    p.add_argument("--arch", help="architecture JSON file (MNIST MLP API form)")
    p.add_argument("--hyperparams", help="hyperparameters JSON file; flags override it")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--train-split", type=float)
    p.add_argument("--patience", type=int, help="early stopping patience (epochs)")
    p.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--eager", action="store_true", help="no CUDA graphs (CUDA only)")
    p.add_argument("--limit", type=int, help="use at most this many training samples")
    p.add_argument("--offline", action="store_true", help="never download; use local data")


# ---- progress ---------------------------------------------------------------------------------
class ProgressSink:
    """Turns engine events into a live terminal progress bar (one bar per run, by epoch)."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.bar = stream, None

    def __call__(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        kind, data = event["type"], event["data"]
        if kind == "run.started":
            self.bar = tqdm(total=data["epochs_total"], unit="epoch", file=self.stream,
                            desc=f"training on {data['device']}", dynamic_ncols=True)
        elif kind == "epoch" and self.bar is not None:
            val = data.get("val_accuracy")
            self.bar.set_postfix(loss=f"{data['train_loss']:.4f}",
                                 val_acc="-" if val is None else f"{val:.4f}",
                                 samples_s=f"{data['samples_per_s']:,.0f}")
            self.bar.update(1)
        elif kind in ("run.completed", "run.failed", "run.cancelled") and self.bar is not None:
            self.bar.close()


# ---- commands -----------------------------------------------------------------------------------
def _open_workbench():
    from .service import Workbench
    from .store import Store, StoreLockedError

    try:
        return Workbench(Store())
    except StoreLockedError as exc:
        sys.exit(f"workbench: {exc}")


def _train(args: argparse.Namespace, *, title: str = "run") -> int:
    from pydantic import ValidationError

    from .data import load_splits
    from .spec import error_messages
    from .train import evaluate

    wb = _open_workbench()
    try:
        model = wb.create_model(_architecture_from_args(args), _hyperparams_from_args(args))
    except (ValidationError, ValueError, OSError) as exc:
        print("workbench: invalid model:", *error_messages(exc), sep="\n  ", file=sys.stderr)
        return 2
    run, hp = wb.create_run(model.model_id, dataset=args.dataset)
    print(f"{title}: model {model.model_id}  run {run.run_id}", file=sys.stderr)
    started = time.perf_counter()
    try:
        result = wb.train_inline(
            run, sink=ProgressSink(), progress=True, device=args.device,
            cuda_graph=not args.eager, limit=args.limit, offline=args.offline or None,
        )
    except KeyboardInterrupt:
        wb.store.set_run_state(run.run_id, "cancelled", error="interrupted by the user")
        print("\nworkbench: cancelled", file=sys.stderr)
        return 130
    except Exception as exc:  # already recorded as run.failed by the engine
        print(f"workbench: training failed: {exc}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    splits = load_splits(args.dataset, train_split=hp.train_split, seed=hp.seed,
                         offline=args.offline or None, progress=False)
    test_loss, test_correct = evaluate(result.model, splits.x_test, splits.y_test)
    final = wb.store.get_run(run.run_id)
    m = result.final_metrics
    summary = {
        "run_id": run.run_id,
        "model_id": model.model_id,
        "param_id": final.param_id if final else None,
        "state": final.state if final else None,
        "dataset": f"{splits.name} ({splits.source})",
        "device": result.device,
        "epochs": len(result.history),
        "stopped_early": result.stopped_early,
        "train_loss": m.get("train_loss"),
        "train_accuracy": m.get("train_accuracy"),
        "val_loss": m.get("val_loss"),
        "val_accuracy": m.get("val_accuracy"),
        "test_accuracy": test_correct.item() / max(1, splits.y_test.shape[0]),
        "samples_per_s": m.get("samples_per_s"),
        "forward_tflops": m.get("forward_tflops"),
        "backward_tflops": m.get("backward_tflops"),
        "total_tflops": m.get("total_tflops"),
        "wall_time_s": wall,
    }
    _print_summary(summary)
    wb.store.close()
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:,.6g}" if "tflops" in key else f"{value:,.4f}"
        table.add_row(key, str(value))
    _console().print(table)


def cmd_train(args: argparse.Namespace) -> int:
    if not args.layers and not args.arch:
        sys.exit("workbench train: give --layers 784,128,10 or --arch FILE")
    from .executors.cli import train_on_target, wants_target

    if wants_target(args):  # another executor (or a running server) trains it
        return train_on_target(args, _architecture_from_args(args), _hyperparams_from_args(args))
    return _train(args)


def cmd_demo(args: argparse.Namespace) -> int:
    # Adam at 1e-3 for 5 epochs: reaches >= 0.90 validation accuracy even on the offline subset.
    defaults = {"layers": DEMO_LAYERS, "epochs": 5, "optimizer": "adam", "lr": 1e-3,
                "batch_size": 64}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return _train(args, title="demo")


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .store import Store

    with Store() as store:
        runs, _ = store.list_runs(model_id=args.model, state=args.state, limit=args.limit,
                                  order="desc")
    table = Table("run", "model", "state", "epoch", "dataset", "device", "val_acc",
                  "samples/s", "TFLOPS", "created")
    for r in runs:
        m = r.metrics
        table.add_row(
            r.run_id, r.model_id, r.state, f"{r.epoch}/{r.epochs_total}", r.dataset,
            r.device or "-", _fmt(m.get("val_accuracy"), ".4f"), _fmt(m.get("samples_per_s"), ",.0f"),
            _fmt(m.get("total_tflops"), ".4g"), r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    _console().print(table)
    return 0


def _console():
    from rich.console import Console

    # Piped output is read by scripts and tests: never truncate ids to 80 columns there.
    return Console() if sys.stdout.isatty() else Console(width=240)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def cmd_sql(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .store import Store

    with Store() as store:
        try:
            columns, rows = store.query(args.query)
        except (PermissionError, ValueError) as exc:
            print(f"workbench sql: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps([dict(zip(columns, row)) for row in rows], default=str))
        return 0
    table = Table(*columns)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    _console().print(table)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from .distributed.worker import serve_worker

    logging.getLogger("workbench.distributed").setLevel(logging.INFO)
    try:
        serve_worker(args.host, args.port)
    except OSError as exc:
        print(f"workbench worker: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app
    from .config import get_settings
    from .jupyter.discovery import server_info  # announces this store's owner (Jupyter attaches)
    from .service import Workbench
    from .store import Store, StoreLockedError

    try:
        service = Workbench(Store(), max_workers=args.workers)
    except StoreLockedError as exc:
        sys.exit(f"workbench serve: {exc}")
    app = create_app(service, close_service=True)
    # The server's own torch work is small-batch inference; intra-op threads would only fight
    # the training workers for cores (on 2 busy cores they make a 512 batch ~7x slower).
    import torch

    torch.set_num_threads(1)
    app.state.trainer_open = args.trainer_open  # loopback may use the trainer API tokenless
    if app.state.generated_key:
        print("workbench serve: generated the admin API key (shown only this once; the store "
              f"keeps only its hash):\n  {app.state.generated_key}", file=sys.stderr)
    print(f"workbench serve: http://{args.host}:{args.port}/api  (explorer: /api/explorer)",
          file=sys.stderr, flush=True)
    if not args.uds and (app_key := app.state.generated_key or get_settings().token):
        # The app's login link (Jupyter-style): opens the app and sets its login cookie.
        print(f"workbench serve: the app: http://{args.host}:{args.port}/?token={app_key}",
              file=sys.stderr, flush=True)
    where = {"uds": args.uds} if args.uds else {"host": args.host, "port": args.port}
    with server_info(f"unix:{args.uds}" if args.uds else f"http://{args.host}:{args.port}"):
        uvicorn.run(app, **where, log_level=args.log_level, access_log=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and store the run")
    _add_train_flags(p, layers_default=None)
    from .executors.cli import add_target_flags

    add_target_flags(p)  # --target / --strategy / --world-size
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="train the default MLP on MNIST and print a summary")
    _add_train_flags(p, layers_default=None)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("runs", help="list runs from the store")
    p.add_argument("--model")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("sql", help="read-only SQL over the store")
    p.add_argument("query")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("serve", help="serve the REST API (and the app) on one port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--uds", help="listen on this Unix socket instead (the JupyterLab tile uses it)")
    p.add_argument("--workers", type=int, default=None,
                   help="training runs at once (default: WORKBENCH_WORKERS or 2)")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--trainer-open", action="store_true",
                   help="let loopback clients use the distributed-trainer API without a token")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run a worker that joins distributed training jobs")
    p.add_argument("--port", type=int, default=5001)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (0.0.0.0 for remote coordinators)")
    p.set_defaults(func=cmd_worker)

    from .nodes.cli import add_nodes_parser  # workbench nodes add | list | check | rm

    add_nodes_parser(sub)
    return parser


def _version() -> str:
    from . import __version__

    return f"workbench {__version__}"


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
