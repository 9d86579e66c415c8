"""``workbench train | demo | watch``: start a run through the front door and follow it live.

Every face trains the same way: the CLI asks this home's owner (``workbench.frontdoor``) over
the public REST API to create the model and queue the run on its target, then follows the run's
event log (``GET /api/runs/{id}/events``, a long poll resumable from the last event id) with a
progress bar, and prints one summary. Ctrl-C cancels the run. ``workbench watch RUN`` attaches
to any run, whichever face started it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .output import fail, print_summary

DEMO_LAYERS = "784,128,64,10"
DEMO_DEFAULTS = {"layers": DEMO_LAYERS, "epochs": 5, "optimizer": "adam", "lr": 1e-3,
                 "batch_size": 64}
TERMINAL = {"succeeded", "failed", "cancelled"}


# ---- arguments ---------------------------------------------------------------------------------
def add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", help="layer sizes, e.g. 784,128,64,10")
    p.add_argument("--arch", help="architecture JSON file (MNIST MLP API form)")
    p.add_argument("--hyperparams", help="hyperparameters JSON file; flags override it")
    p.add_argument("--epochs", type=int, help="epochs to train (default 10, demo 5)")
    p.add_argument("--batch-size", type=int, help="samples per step (default 128, demo 64)")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"],
                   help="default sgd (demo: adam)")
    p.add_argument("--lr", type=float, help="learning rate (default 0.01, demo 1e-3)")
    p.add_argument("--momentum", type=float, help="SGD momentum")
    p.add_argument("--seed", type=int, help="random seed (default 42)")
    p.add_argument("--train-split", type=float, help="share of training data used to train "
                   "(the rest validates; default 0.9)")
    p.add_argument("--patience", type=int, help="early stopping patience in epochs")
    p.add_argument("--dataset", default="mnist",
                   help="mnist | fashion-mnist | a bundled table (digits, iris, wine, "
                   "breast-cancer) | a registered dataset's name or id (`GET /api/v1/datasets`;"
                   " trains on the local target); default: %(default)s")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N "
                   "(default: %(default)s)")
    p.add_argument("--eager", action="store_true", help="no CUDA graphs (CUDA only)")
    p.add_argument("--limit", type=int, help="use at most this many training samples")
    p.add_argument("--offline", action="store_true", help="never download; use local data")
    p.add_argument("--target", default="local",
                   help="local | local-kernel | distributed | ray | a registered node id "
                   "(default: %(default)s)")
    p.add_argument("--strategy", default="single", choices=["single", "ddp", "pipeline"],
                   help="ddp / pipeline: train on torch.distributed ranks (default: %(default)s)")
    p.add_argument("--world-size", type=int, help="ranks of a ddp / pipeline run (default 2)")


def registered_dataset(args: argparse.Namespace) -> bool:
    """A dataset of the registry rather than the MNIST MLP API's mnist / fashion-mnist."""
    from ..client import MNIST_API_DATASETS

    return args.dataset not in MNIST_API_DATASETS


def architecture_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from ..netspec import as_netspec_json
    from ..spec import Architecture

    if args.arch:
        arch = json.loads(Path(args.arch).read_text())
    else:
        sizes = [int(s) for s in args.layers.split(",") if s.strip()]
        # a registered dataset has its own class count: the run checks it against the last size
        classes = None if registered_dataset(args) else 10
        arch = Architecture.from_layer_sizes(sizes, num_classes=classes).to_json()
    # the MNIST MLP API stores ten-class MLPs only; the native spec any network
    return as_netspec_json(arch) if registered_dataset(args) else arch


def hyperparams_from_args(args: argparse.Namespace) -> dict[str, Any]:
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


# ---- following a run -------------------------------------------------------------------------
class Progress:
    """Run events -> a tqdm bar by step inside each epoch (sampled step events), one summary."""

    def __init__(self, stream: Any = sys.stderr, enabled: bool = True):
        self.stream, self.enabled = stream, enabled
        self.bar: Any = None
        self.started: dict[str, Any] = {}
        self.completed: dict[str, Any] = {}
        self.evaluation: dict[str, Any] = {}
        self.times: list[float] = []
        self.steps_per_epoch = 0
        self.epoch = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind, data = event["type"], event.get("data") or {}
        if kind == "run.started" or self.times:  # training time: from start to the end
            self.times.append(float(event.get("time") or 0.0))
        if kind == "run.started":
            self.started = data
            n_train, batch = data.get("n_train"), data.get("batch_size")
            if isinstance(n_train, int) and isinstance(batch, int) and batch > 0:
                self.steps_per_epoch = -(-n_train // batch)
            if self.enabled:
                from tqdm import tqdm

                total = data.get("epochs_total") or 1
                self.bar = tqdm(total=float(total), unit="epoch", file=self.stream,
                                desc=f"training on {data.get('device', '?')}", dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} epochs "
                                           "[{elapsed}<{remaining}{postfix}]")
        elif kind == "step" and self.bar is not None and self.steps_per_epoch:
            epoch, step = data.get("epoch") or 1, data.get("step") or 0
            within = (step - (epoch - 1) * self.steps_per_epoch) / self.steps_per_epoch
            self._move_to(epoch - 1 + min(max(within, 0.0), 1.0))
            if isinstance(data.get("loss"), (int, float)):
                self.bar.set_postfix_str(f"loss={data['loss']:.4f}", refresh=False)
        elif kind == "epoch":
            self.epoch = int(data.get("epoch") or self.epoch + 1)
            if self.bar is not None:
                self._move_to(float(self.epoch))
                val = data.get("val_accuracy")
                self.bar.set_postfix(loss=f"{data.get('train_loss', float('nan')):.4f}",
                                     val_acc="-" if val is None else f"{val:.4f}",
                                     samples_s=f"{data.get('samples_per_s', 0):,.0f}")
        elif kind == "evaluation":
            self.evaluation = data
        elif kind == "run.completed":
            self.completed = data
        if kind in ("run.completed", "run.failed", "run.cancelled"):
            self.close()

    def _move_to(self, position: float) -> None:
        if position > self.bar.n:
            self.bar.update(position - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    @property
    def wall_time_s(self) -> float | None:
        return self.times[-1] - self.times[0] if len(self.times) > 1 else None


def follow(client: Any, run_id: str, progress: Progress, *, after: int = 0) -> dict[str, Any]:
    """Feed the run's events (from ``after``) to ``progress`` until it ends; Ctrl-C cancels it
    and keeps following until the cancellation lands. If the owner goes away (killed), the
    front door finds or starts the next one, which fails the run naming the dead owner, and
    following resumes from the last event seen. Returns the final run."""
    import httpx

    cancelled = False
    while True:
        try:
            for event in client.follow(run_id, after=after):
                after = max(after, int(event.get("id") or 0))
                progress(event)
            break
        except KeyboardInterrupt:
            if cancelled:
                raise
            cancelled = True
            progress.close()
            print("\nworkbench: cancelling the run (Ctrl-C again to stop waiting)",
                  file=sys.stderr)
            client.cancel(run_id)
        except httpx.TransportError as exc:
            print(f"\nworkbench: lost the store's owner ({exc}); reconnecting", file=sys.stderr)
            client = _connect()
    progress.close()
    return client.get_run(run_id)


def summary_of(run: dict[str, Any], progress: Progress) -> dict[str, Any]:
    m = run.get("metrics") or {}
    source = progress.started.get("dataset_source")
    summary: dict[str, Any] = {
        "run_id": run["run_id"], "model_id": run["model_id"], "param_id": run.get("param_id"),
        "state": run["state"], "target": run.get("target"),
        "dataset": f"{run['dataset']} ({source})" if source else run["dataset"],
        "device": run.get("device"),
        "epochs": progress.completed.get("epochs_run", run.get("epoch")),
        "stopped_early": progress.completed.get("stopped_early"),
    }
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                 "test_accuracy", "samples_per_s", "forward_tflops", "backward_tflops",
                 "total_tflops", "share_of_peak", "mfu"):
        value = m.get(name, progress.evaluation.get(name))
        if value is not None:
            summary[name] = value
    summary["wall_time_s"] = progress.wall_time_s
    if run.get("error"):
        summary["error"] = run["error"]
    return {k: v for k, v in summary.items() if v is not None}


# ---- commands --------------------------------------------------------------------------------
def _connect() -> Any:
    from ..frontdoor import OwnerUnavailable, connect

    try:
        return connect()
    except OwnerUnavailable as exc:
        sys.exit(f"workbench: {exc}")


def run_training(args: argparse.Namespace, *, title: str = "run") -> int:
    from ..client import ApiError

    try:
        architecture = architecture_from_args(args)
        hyperparams = hyperparams_from_args(args)
    except (OSError, ValueError) as exc:
        print("workbench: invalid model:", f"  {exc}", sep="\n", file=sys.stderr)
        return 2
    if registered_dataset(args) and (args.target != "local" or args.strategy != "single"):
        return fail("train", f"dataset {args.dataset!r}: a registered dataset trains on the "
                    "local target only (no --target / --strategy)")
    client = _connect()
    try:
        model = client.create_model(architecture, hyperparams)
    except ApiError as exc:
        print("workbench: invalid model:", *(exc.errors or [exc.detail]), sep="\n  ",
              file=sys.stderr)
        return 2
    try:
        queued = client.train(model["model_id"], dataset=args.dataset, limit=args.limit,
                              device=args.device, target=args.target, strategy=args.strategy,
                              world_size=args.world_size, cuda_graph=not args.eager,
                              offline=True if args.offline else None)
    except ApiError as exc:
        return fail("train", "; ".join(exc.errors or [exc.detail]))
    where = "" if args.target == "local" else f" on {args.target}"
    if args.strategy != "single":  # torch.distributed ranks (target "distributed")
        where = f" as {args.strategy} ranks{where}"
    print(f"{title}: model {model['model_id']}  run {queued['run_id']}{where}", file=sys.stderr)
    progress = Progress()
    run = follow(client, queued["run_id"], progress)
    print_summary(summary_of(run, progress))
    if run["state"] == "cancelled":
        return 130
    return 0 if run["state"] == "succeeded" else 1


def cmd_train(args: argparse.Namespace) -> int:
    if not args.layers and not args.arch:
        return fail("train", "give --layers 784,128,10 or --arch FILE")
    return run_training(args)


def cmd_demo(args: argparse.Namespace) -> int:
    # Adam at 1e-3 for 5 epochs: reaches >= 0.90 validation accuracy even on the offline subset.
    for key, value in DEMO_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return run_training(args, title="demo")


def cmd_watch(args: argparse.Namespace) -> int:
    from ..client import ApiError

    client = _connect()
    try:
        client.get_run(args.run_id)
    except ApiError as exc:
        return fail("watch", exc.detail)
    progress = Progress()
    run = follow(client, args.run_id, progress, after=args.after)
    print_summary(summary_of(run, progress))
    return 0 if run["state"] == "succeeded" else 1


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model and store the run")
    add_train_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="train the default MLP (784-128-64-10, 5 epochs of adam) "
                       "on MNIST and print a summary")
    add_train_flags(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("watch", help="follow a run live (started by any face) to its end")
    p.add_argument("run_id", help="the run to follow, e.g. r_0123… (see `workbench runs`)")
    p.add_argument("--after", type=int, default=0,
                   help="the last event id already seen (default: replay from the start)")
    p.set_defaults(func=cmd_watch)
