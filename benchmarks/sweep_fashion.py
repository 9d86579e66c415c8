"""A 16-trial TPE sweep over lr x width x depth on Fashion-MNIST, 2 trials at once on local
workers, against the default configuration trained the same way in the same run.

    python benchmarks/sweep_fashion.py [--trials 16] [--epochs 3] [--limit 12000] [--parallel 2]

The workbench's own owner on a temporary home (a ``Workbench`` in this process, the sweep and
the baseline runs dispatched to local worker processes like any run). Fashion-MNIST comes from
``WORKBENCH_FASHION_MNIST_DIR`` or Debian's ``/usr/share/datasets/fashion-mnist``. The default
configuration is the README's demo network, 784-128-64-10, with the default hyperparameters
(SGD, lr 0.1, batch 64); the sweep tries the space's nearest point first (``enqueue``: lr 0.1,
784-128-128-10), then TPE's draws (``--no-enqueue``: draws only); every trial and the baseline train ``--epochs`` epochs on the first
``--limit`` training samples with the same seed and split. Prints one JSON line: the best
trial's validation accuracy, the default's, ``ratio`` = best / default, trials complete and
pruned, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# The space's point nearest the default (which has 128 then 64 units: not a point of a space
# with one width), tried first unless --no-enqueue.
ENQUEUED = {"lr": 0.1, "width": 128, "depth": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16, help="trials of the sweep")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of every run")
    parser.add_argument("--limit", type=int, default=12000, help="training samples per run")
    parser.add_argument("--parallel", type=int, default=2, help="trials at once (workers)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's and runs' seed")
    parser.add_argument("--no-enqueue", action="store_true",
                        help="do not try the point nearest the default first (lr 0.1, two "
                             "hidden layers of 128): search from random draws only")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sweep-fashion-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    debian = Path("/usr/share/datasets/fashion-mnist")
    if "WORKBENCH_FASHION_MNIST_DIR" not in os.environ and debian.is_dir():
        os.environ["WORKBENCH_FASHION_MNIST_DIR"] = str(debian)

    from workbench.service import Workbench
    from workbench.spec import Architecture, Hyperparams
    from workbench.store import Store

    service = Workbench(Store(home / "workbench.duckdb"), max_workers=args.parallel)
    base_hp = {"epochs": args.epochs, "seed": args.seed}
    started = time.perf_counter()
    try:
        # The default configuration, trained once beside the sweep's trials.
        default = service.create_model(
            Architecture.from_layer_sizes([784, 128, 64, 10]).to_json(),
            Hyperparams.model_validate(base_hp).to_json(), name="default-784-128-64-10")
        baseline = service.start_run(default.model_id, dataset="fashion-mnist",
                                     limit=args.limit, name="default", experiment="baseline")
        sweep = service.sweeps.create({
            "name": "fashion-lr-width-depth", "dataset": "fashion-mnist", "limit": args.limit,
            "hyperparams": base_hp,
            "space": {"lr": {"low": 1e-3, "high": 0.5, "log": True},
                      "width": {"low": 32, "high": 512, "log": True},
                      "depth": {"low": 1, "high": 3}},
            "objective": {"metric": "val_accuracy"}, "budget": {"trials": args.trials},
            "parallelism": args.parallel, "sampler": {"type": "tpe", "seed": args.seed},
            "pruner": {"type": "median", "n_startup_trials": 4, "n_warmup_steps": 0},
            "enqueue": [] if args.no_enqueue else [ENQUEUED],
        })
        result = service.sweeps.wait(sweep["sweep_id"])
        base_run = service.wait_run(baseline.run_id)
    finally:
        service.close()
    best = result["best"] or {}
    default_acc = base_run.metrics.get("val_accuracy")
    best_acc = best.get("value")
    print(json.dumps({
        "benchmark": "sweep_fashion", "trials": result["counts"]["total"],
        "complete": result["counts"]["complete"], "pruned": result["counts"]["pruned"],
        "failed": result["counts"]["failed"], "state": result["state"],
        "epochs": args.epochs, "limit": args.limit, "parallel": args.parallel,
        "best_val_accuracy": best_acc, "best_params": best.get("params"),
        "best_layers": best.get("layer_sizes"), "default_val_accuracy": default_acc,
        "ratio": (best_acc / default_acc) if best_acc and default_acc else None,
        "enqueued": [] if args.no_enqueue else [ENQUEUED],
        "wall_s": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
