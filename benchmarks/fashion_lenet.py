"""The issue's accuracy bar: a LeNet-5-style CNN (examples/architectures/lenet5.json) on full
Fashion-MNIST, trained by the workbench engine on the CPU, must reach test accuracy >= 0.90 in
<= 10 epochs. Takes about an hour on 2 shared cores.

    WORKBENCH_FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist \\
        python benchmarks/fashion_lenet.py [--epochs 10] [--batch-size 64] [--threads 2]

Prints one JSON line per epoch (validation accuracy) and a final line with the test accuracy,
the wall time and ``ratio`` = test accuracy / 0.90 (the bar).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from workbench import events as ev
from workbench.data import load_splits
from workbench.spec import Hyperparams, validate_network
from workbench.train import TrainOptions, train
from workbench.train.engine import evaluate

ROOT = Path(__file__).resolve().parents[1]
BAR = 0.90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=str(ROOT / "examples/architectures/lenet5.json"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-split", type=float, default=0.9,
                        help="share of the 60,000 training images trained on (1.0: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = validate_network(json.loads(Path(args.arch).read_text()))
    splits = load_splits("fashion-mnist", progress=False, train_split=args.train_split)
    hp = Hyperparams.model_validate({"epochs": args.epochs, "batch_size": args.batch_size,
                                     "optimizer": {"type": "adam", "lr": args.lr}, "seed": 0,
                                     "train_split": args.train_split})

    def sink(event: dict) -> None:
        if event["type"] == ev.EPOCH:
            m = event["data"]
            val = m["val_accuracy"]
            print(json.dumps({"epoch": m["epoch"], "val_accuracy": val and round(val, 4),
                              "train_loss": round(m["train_loss"], 4),
                              "epoch_time_s": round(m["epoch_time_s"], 1)}), flush=True)

    t0 = time.perf_counter()
    result = train(spec, hp, splits, sink=sink,
                   options=TrainOptions(device="cpu", include_weights_in_event=False))
    wall = time.perf_counter() - t0
    result.model.eval()
    _, correct = evaluate(result.model, splits.x_test, splits.y_test)
    accuracy = int(correct) / splits.x_test.shape[0]
    print(json.dumps({"case": "fashion_lenet", "source": splits.source,
                      "n_train": int(splits.x_train.shape[0]), "epochs": len(result.history),
                      "batch_size": args.batch_size, "threads": args.threads,
                      "test_accuracy": round(accuracy, 4), "wall_s": round(wall, 1),
                      "ratio": round(accuracy / BAR, 4)}), flush=True)


if __name__ == "__main__":
    main()
