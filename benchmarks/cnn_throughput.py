"""CNN training throughput: the workbench engine vs a plain hand-written torch loop of the same
net, in one run (and, on a GPU, the engine's CUDA graphs vs eager; on the CPU, the engine's
default channels_last memory format for conv nets vs contiguous NCHW).

The plain loop is what one writes by hand: the same layers as ``torch.nn`` modules, the data as
``(N, 1, 28, 28)`` tensors on the device, batches sliced from ``torch.randperm``, zero_grad /
forward / cross-entropy / backward / Adam step, no per-step host sync. Both see the same data
(real MNIST: the bundled subset offline), batch size and epochs; each side's best of
``--repeats`` interleaved runs counts (the machine is shared). The plain loop also runs in
``channels_last`` memory format, so that choice is measured, not assumed.

    python benchmarks/cnn_throughput.py [--arch examples/architectures/lenet5.json]
        [--epochs 1] [--batch-size 128] [--repeats 3] [--device cpu] [--threads 2]

Prints one JSON line per case: samples/s of each side and ``ratio`` = engine / plain (or
graphed / eager).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data import load_splits
from workbench.spec import Hyperparams, validate_network
from workbench.train import TrainOptions, train

ROOT = Path(__file__).resolve().parents[1]


def hand_written(spec) -> nn.Sequential:
    """The spec's layers as plain torch modules (no workbench.model), for the baseline."""
    modules: list[nn.Module] = []
    for info, layer in zip(spec.layer_infos, spec.layers):
        c = info.input_shape[0]
        kind = layer.type
        if kind == "conv2d":
            modules.append(nn.Conv2d(c, layer.out, layer.kernel, layer.stride or 1,
                                     layer.padding or 0))
        elif kind == "maxpool2d":
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding or 0))
        elif kind == "avgpool2d":
            modules.append(nn.AvgPool2d(layer.kernel, layer.stride, layer.padding or 0))
        elif kind == "linear":
            modules.append(nn.Linear(c, layer.out))
        elif kind == "batchnorm2d":
            modules.append(nn.BatchNorm2d(c))
        elif kind == "batchnorm1d":
            modules.append(nn.BatchNorm1d(c))
        elif kind == "dropout":
            modules.append(nn.Dropout(layer.p))
        else:
            modules.append({"relu": nn.ReLU, "flatten": nn.Flatten, "gelu": nn.GELU,
                            "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[kind]())
    return nn.Sequential(*modules)


def plain_loop(spec, x, y, *, epochs: int, batch_size: int, channels_last: bool) -> float:
    """Samples/s of training steps only, as the engine reports them."""
    torch.manual_seed(0)
    device = x.device
    x = x.reshape(-1, *spec.input_shape)
    model = hand_written(spec).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = x.shape[0]
    seconds = 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, device=device)
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        _sync(device)
        seconds += time.perf_counter() - t0
    return epochs * n / seconds


def engine(spec, splits, *, epochs: int, batch_size: int, device: str,
           cuda_graph: bool = False, channels_last: bool | None = None) -> float:
    hp = Hyperparams.model_validate({"epochs": epochs, "batch_size": batch_size,
                                     "optimizer": {"type": "adam", "lr": 1e-3}, "seed": 0})
    result = train(spec, hp, splits, options=TrainOptions(device=device, cuda_graph=cuda_graph,
                                                          include_weights_in_event=False,
                                                          channels_last=channels_last))
    return sum(h["samples_per_s"] for h in result.history) / len(result.history)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=str(ROOT / "examples/architectures/lenet5.json"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="training samples")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = validate_network(json.loads(Path(args.arch).read_text()))
    splits = load_splits("mnist", offline=True, progress=False, limit=args.limit)
    device = torch.device(args.device)
    data = splits.to(device)
    x, y = data.x_train, data.y_train
    common = {"epochs": args.epochs, "batch_size": args.batch_size}

    best = {"engine": 0.0, "engine_contiguous": 0.0, "plain": 0.0, "plain_channels_last": 0.0}
    for _ in range(args.repeats):  # interleaved, so a busy moment hurts both sides alike
        best["engine"] = max(best["engine"], engine(spec, splits, device=args.device, **common))
        best["engine_contiguous"] = max(best["engine_contiguous"], engine(
            spec, splits, device=args.device, channels_last=False, **common))
        best["plain"] = max(best["plain"], plain_loop(spec, x, y, channels_last=False, **common))
        best["plain_channels_last"] = max(best["plain_channels_last"], plain_loop(
            spec, x, y, channels_last=True, **common))
    print(json.dumps({
        "case": "engine_vs_plain", "arch": Path(args.arch).name, "device": str(device),
        "threads": args.threads, "n_train": int(x.shape[0]), **common,
        "engine_samples_per_s": round(best["engine"], 1),
        # the engine's default (channels_last for conv nets on the CPU) vs contiguous NCHW
        "engine_contiguous_samples_per_s": round(best["engine_contiguous"], 1),
        "engine_channels_last_ratio": round(best["engine"] / best["engine_contiguous"], 3),
        "plain_samples_per_s": round(best["plain"], 1),
        "plain_channels_last_samples_per_s": round(best["plain_channels_last"], 1),
        "channels_last_ratio": round(best["plain_channels_last"] / best["plain"], 3),
        "ratio": round(best["engine"] / best["plain"], 3),
    }))
    if device.type == "cuda":
        graphed = max(engine(spec, splits, device=args.device, cuda_graph=True, **common)
                      for _ in range(args.repeats))
        eager = max(engine(spec, splits, device=args.device, cuda_graph=False, **common)
                    for _ in range(args.repeats))
        print(json.dumps({"case": "graphs_vs_eager", "arch": Path(args.arch).name,
                          "device": torch.cuda.get_device_name(device), **common,
                          "graphed_samples_per_s": round(graphed, 1),
                          "eager_samples_per_s": round(eager, 1),
                          "ratio": round(graphed / eager, 3)}))


if __name__ == "__main__":
    main()
