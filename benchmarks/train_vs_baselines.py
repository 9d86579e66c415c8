"""Training speed and accuracy: the workbench engine vs a plain torch loop vs scikit-learn.

Three ways to train the same 784-256-128-10 ReLU MLP on the same normalized tensors, timed in
one run on one machine:

- ``engine``: ``workbench.train.train`` (device-resident data, seeded permutation slicing, one
  host sync per epoch, the optimizer implementation it picks: fused where torch has it, and
  for a dense MLP on the CPU the step with its backward written out, ``train.mlp_step``);
- ``plain``: the loop one writes by hand: the same data as tensors, ``x[perm[i:i+B]]`` per
  batch, ``torch.optim.Adam``/``SGD`` with torch's default implementation, the loss summed on
  the device and read once per epoch (no ``loss.item()`` per step);
- ``sklearn``: ``MLPClassifier`` with the same hidden sizes, solver, learning rate, batch size
  and epochs (``max_iter``; ``early_stopping=False``, no tolerance stop, ``alpha=0``).

    python benchmarks/train_vs_baselines.py [--epochs 1] [--batch-size 128] [--optimizer adam]
        [--repeats 1] [--threads N] [--limit N] [--no-sklearn]

Uses Fashion-MNIST when it is installed (Debian's ``dataset-fashion-mnist``, found by
``workbench.data``), else the bundled MNIST subset: by default 20,000 (shuffled) training
images, ``--limit 0`` for all of them, and always the whole test set for accuracy.
``--repeats N`` interleaves N runs of each trainer and keeps the fastest, which helps on a
shared machine. Prints one JSON line per (optimizer, batch size) case: samples/s over the
whole training call, test accuracy for each, and ``ratio_vs_plain`` / ``ratio_vs_sklearn`` =
engine samples/s / baseline samples/s (fastest runs), and with repeats the median of the
per-round ratios (``paired_median_ratio_vs_*``), the steadier number on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from workbench.data import DatasetUnavailableError, load_splits
from workbench.model import build_model, logits_module
from workbench.spec import Architecture, Hyperparams
from workbench.train import TrainOptions, evaluate, train

SIZES = [784, 256, 128, 10]
ARCH = Architecture.from_layer_sizes(SIZES)
OPTIMIZERS = {  # the same settings for all three trainers
    "adam": {"type": "adam", "lr": 1e-3},
    "sgd": {"type": "sgd", "lr": 0.01, "momentum": 0.9},
}
SEED = 0


def load(dataset: str, limit: int | None = None):
    """``auto``: full Fashion-MNIST if it is installed here, else the bundled MNIST subset."""
    kw = {"train_split": 1.0, "limit": limit, "progress": False}
    if dataset != "auto":
        return load_splits(dataset, **kw)
    try:
        return load_splits("fashion-mnist", offline=True, **kw)
    except DatasetUnavailableError:
        return load_splits("mnist", offline=True, **kw)


def warm_up(splits) -> None:
    """Pay one-time costs before anything is timed: torch imports its compiler stack lazily on
    the first ``optimizer.step()`` (seconds), and the first matmuls set up the thread pool, so
    whichever trainer ran first would otherwise carry them."""
    model = build_model(ARCH)
    for cls in (torch.optim.Adam, torch.optim.SGD):
        opt = cls(model.parameters(), lr=1e-3)
        F.cross_entropy(model(splits.x_train[:8]), splits.y_train[:8]).backward()
        opt.step()


def accuracy_on_test(model: torch.nn.Module, splits) -> float:
    model.eval()
    _, correct = evaluate(logits_module(model), splits.x_test, splits.y_test)
    return int(correct) / len(splits.y_test)


def timed(n_samples: int, seconds: float, accuracy: float, **extra) -> dict:
    return {"samples_per_s": n_samples / seconds, "train_time_s": seconds,
            "test_accuracy": accuracy, **extra}


def run_engine(splits, optimizer: str, batch_size: int, epochs: int) -> dict:
    hp = Hyperparams(epochs=epochs, batch_size=batch_size, seed=SEED,
                     optimizer=OPTIMIZERS[optimizer])
    t0 = time.perf_counter()
    result = train(ARCH, hp, splits,
                   options=TrainOptions(device="cpu", include_weights_in_event=False))
    seconds = time.perf_counter() - t0
    return timed(epochs * len(splits.y_train), seconds, accuracy_on_test(result.model, splits),
                 optimizer_impl=result.optimizer_impl, step_impl=result.step_impl,
                 best_epoch_samples_per_s=max(m["samples_per_s"] for m in result.history))


def run_plain(splits, optimizer: str, batch_size: int, epochs: int) -> dict:
    spec = OPTIMIZERS[optimizer]
    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    model = build_model(ARCH)
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"])
    x, y = splits.x_train, splits.y_train
    n = len(y)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=generator)
        running = torch.zeros(())
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach()
        running.item()  # one read per epoch, as a logging loop would
    seconds = time.perf_counter() - t0
    return timed(epochs * n, seconds, accuracy_on_test(model, splits), optimizer_impl="default")


def run_sklearn(splits, optimizer: str, batch_size: int, epochs: int) -> dict | None:
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    spec = OPTIMIZERS[optimizer]
    extra = ({"momentum": spec["momentum"], "nesterovs_momentum": False}
             if optimizer == "sgd" else {})
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(SIZES[1:-1]), activation="relu", solver=optimizer,
        alpha=0.0, batch_size=batch_size, learning_rate_init=spec["lr"],
        learning_rate="constant", max_iter=epochs, shuffle=True, random_state=SEED,
        early_stopping=False, tol=0.0, n_iter_no_change=epochs + 1, **extra,
    )
    x, y = splits.x_train.numpy(), splits.y_train.numpy()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter reached: by design
        clf.fit(x, y)
    seconds = time.perf_counter() - t0
    accuracy = float(clf.score(splits.x_test.numpy(), splits.y_test.numpy()))
    return timed(epochs * len(y), seconds, accuracy, epochs_run=int(clf.n_iter_))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="auto",
                        help="auto (fashion-mnist if installed, else mnist), fashion-mnist, mnist")
    parser.add_argument("--epochs", type=int, default=1, help="epochs for every trainer")
    parser.add_argument("--batch-size", type=int, action="append",
                        help="repeatable; default: 64, 128 and 512")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), action="append",
                        help="repeatable; default: adam and sgd")
    parser.add_argument("--no-sklearn", action="store_true", help="skip the sklearn baseline")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each trainer per case, interleaved; the fastest is kept")
    parser.add_argument("--limit", type=int, default=20000,
                        help="training samples (default 20000, which keeps the default run of "
                             "six cases to a few minutes on 2 cores; 0 = the whole training set)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads for torch and sklearn's BLAS (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits  # comes with scikit-learn

            threadpool_limits(args.threads)
        except ImportError:
            pass
    splits = load(args.dataset, args.limit or None)
    warm_up(splits)
    trainers = {"engine": run_engine, "plain": run_plain}
    if not args.no_sklearn:
        trainers["sklearn"] = run_sklearn
    for optimizer in args.optimizer or ["adam", "sgd"]:
        for batch_size in args.batch_size or [64, 128, 512]:
            runs: dict[str, list[dict]] = {name: [] for name in trainers}
            for _ in range(max(args.repeats, 1)):
                for name, run in trainers.items():
                    out = run(splits, optimizer, batch_size, args.epochs)
                    if out is not None:
                        runs[name].append(out)
            best = {name: max(r, key=lambda m: m["samples_per_s"]) if r else None
                    for name, r in runs.items()}
            paired = {  # per-round ratios: each pair ran back to back, so shares the load
                base: statistics.median(e["samples_per_s"] / o["samples_per_s"]
                                        for e, o in zip(runs["engine"], runs[base]))
                for base in ("plain", "sklearn") if runs.get(base)
            }
            engine, plain, sk = best["engine"], best["plain"], best.get("sklearn")
            print(json.dumps({
                "benchmark": "train_vs_baselines",
                "dataset": f"{splits.name} ({splits.source})",
                "n_train": len(splits.y_train),
                "n_test": len(splits.y_test),
                "arch": "-".join(map(str, SIZES)),
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "optimizer": OPTIMIZERS[optimizer],
                "batch_size": batch_size,
                "epochs": args.epochs,
                "repeats": max(args.repeats, 1),
                "engine": engine,
                "plain": plain,
                "sklearn": sk,
                "ratio_vs_plain": engine["samples_per_s"] / plain["samples_per_s"],
                "ratio_vs_sklearn": engine["samples_per_s"] / sk["samples_per_s"] if sk else None,
                "paired_median_ratio_vs_plain": paired.get("plain"),
                "paired_median_ratio_vs_sklearn": paired.get("sklearn"),
            }), flush=True)


if __name__ == "__main__":
    main()
