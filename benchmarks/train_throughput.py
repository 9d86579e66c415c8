"""Training throughput: the workbench engine vs the tutorial pattern, in one run.

The tutorial pattern is what most MNIST examples do: a per-sample ``Dataset`` that turns a
uint8 image into a normalized float tensor in ``__getitem__``, a ``DataLoader`` that collates
batches, a host->device copy per step and ``loss.item()`` every step. The engine keeps the data
on the device, slices batches from a seeded permutation and syncs once per epoch.

    python benchmarks/train_throughput.py [--epochs 2] [--dataset fashion-mnist] [--device cpu]

Prints one JSON line per (device, batch size) case: samples/s, achieved TFLOPS, epoch time,
peak memory, and ``ratio`` = engine samples/s / tutorial samples/s.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from workbench.data import load_raw
from workbench.model import build_model, model_cost
from workbench.spec import Architecture, Hyperparams
from workbench.train import TrainOptions, train
from workbench.train.timing import peak_memory_bytes

ARCH = Architecture.from_layer_sizes([784, 128, 64, 10])
MEAN, STD = 0.1307, 0.3081


class TutorialDataset(torch.utils.data.Dataset):
    """What ``torchvision.datasets.MNIST(transform=Compose([ToTensor(), Normalize(...)]))``
    does per sample (PyTorch's examples/mnist), written out because torchvision is not a
    dependency: uint8 array -> PIL image -> ToTensor -> Normalize."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        img, target = self.images[i], int(self.labels[i])
        img = Image.fromarray(img.numpy(), mode="L")  # torchvision MNIST.__getitem__
        x = torch.from_numpy(np.array(img, np.uint8, copy=True))  # ToTensor
        x = x.view(img.size[1], img.size[0], 1).permute(2, 0, 1).contiguous().float().div(255)
        x = x.sub_(MEAN).div_(STD)  # Normalize
        return x.view(-1), target


def tutorial_epoch(images, labels, batch_size: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model(ARCH).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(
        TutorialDataset(images, labels), batch_size=batch_size, shuffle=True
    )
    running = 0.0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()
    seconds = time.perf_counter() - t0
    n = len(labels)
    cost = model_cost(ARCH)
    return {
        "samples_per_s": n / seconds,
        "epoch_time_s": seconds,
        "total_tflops": cost.train_flops * n / seconds / 1e12,
        "peak_memory_bytes": peak_memory_bytes(device),
    }


class Splits:
    """Just the tensors the engine reads (no validation split: same samples as the tutorial)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        x = torch.from_numpy(images.reshape(len(images), -1)).float().div(255.0)
        self.x_train = (x - MEAN) / STD
        self.y_train = torch.from_numpy(labels.astype(np.int64))
        self.x_val = self.x_train[:0]
        self.y_val = self.y_train[:0]

    def to(self, device):
        out = Splits.__new__(Splits)
        for key in ("x_train", "y_train", "x_val", "y_val"):
            setattr(out, key, getattr(self, key).to(device))
        return out


def engine_epochs(images, labels, batch_size: int, device: torch.device, epochs: int) -> dict:
    hp = Hyperparams(epochs=epochs, batch_size=batch_size, optimizer={"type": "sgd", "lr": 0.1})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = train(ARCH, hp, Splits(images, labels), options=TrainOptions(device=str(device)))
    best = max(result.history[1:] or result.history, key=lambda m: m["samples_per_s"])
    return {k: best[k] for k in ("samples_per_s", "epoch_time_s", "forward_tflops",
                                 "backward_tflops", "total_tflops", "peak_memory_bytes")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="fashion-mnist (full, from Debian's package) or mnist")
    parser.add_argument("--epochs", type=int, default=3, help="engine epochs (best is reported)")
    parser.add_argument("--device", action="append", help="cpu / cuda (default: all present)")
    parser.add_argument("--batch-size", type=int, action="append", help="default: 64 and 512")
    args = parser.parse_args()
    raw = load_raw(args.dataset, progress=False)
    images, labels = np.asarray(raw.x_train), np.asarray(raw.y_train)
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for name in devices:
        device = torch.device(name)
        for batch_size in args.batch_size or [64, 512]:
            baseline = tutorial_epoch(images, labels, batch_size, device)
            engine = engine_epochs(images, labels, batch_size, device, args.epochs)
            print(json.dumps({
                "benchmark": "train_throughput",
                "dataset": f"{args.dataset} ({raw.source})",
                "n_train": int(len(labels)),
                "arch": "784-128-64-10",
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "batch_size": batch_size,
                "engine": engine,
                "tutorial": baseline,
                "ratio": engine["samples_per_s"] / baseline["samples_per_s"],
            }), flush=True)


if __name__ == "__main__":
    main()
