"""Distributed training throughput: 1 vs 2 processes, pipeline and DDP, gloo on CPU.

    python benchmarks/distributed.py [--epochs 3] [--layers 784,256,128,10] [--batch-size 256]

Prints one JSON line per case: training samples/s (mean over epochs after the first, the
train phase only) and wall time including process start-up, with ``ratio`` = samples/s relative
to the same strategy on 1 process measured in this run, and ``vs_engine`` relative to the
single-process engine. When CUDA is present, also DDP over NCCL (one process per GPU; two
processes on one GPU when there is only one, which NCCL may refuse: then the line says so).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from workbench.data import load_splits
from workbench.distributed.allocation import allocate
from workbench.distributed.coordinator import JobFailed
from workbench.distributed.job import DistJob
from workbench.distributed.launch import run_local
from workbench.spec import Architecture, Hyperparams
from workbench.train import TrainOptions, train
from workbench.train.job import RunSpec


def steady(epochs: list[dict]) -> float:
    rates = [e["samples_per_s"] for e in epochs]
    return statistics.mean(rates[1:] if len(rates) > 1 else rates)


def run_engine(arch: Architecture, hp: dict, limit: int | None) -> dict:
    splits = load_splits("mnist", offline=True, limit=limit, progress=False)
    t0 = time.perf_counter()
    result = train(arch, Hyperparams.model_validate(hp), splits,
                   options=TrainOptions(device="cpu"))
    return {"samples_per_s": steady(result.history), "wall_s": time.perf_counter() - t0,
            "val_accuracy": result.final_metrics["val_accuracy"]}


def run_dist(arch: Architecture, hp: dict, strategy: str, world: int, limit: int | None,
             device: str = "cpu", micro_batches: int = 4) -> dict:
    run = RunSpec(run_id=f"r_bench_{strategy}_{world}", architecture=arch.to_json(),
                  hyperparams=hp, device=device, offline=True, limit=limit)
    plan = [p.to_json() for p in allocate(arch, [1.0] * world)] if strategy == "pipeline" else []
    world = len(plan) or world
    job = DistJob(job_id=f"bench-{strategy}-{world}-{device}", strategy=strategy,
                  world_size=world, run=run, plan=plan, micro_batches=micro_batches, timeout_s=120)
    events: list[dict] = []
    t0 = time.perf_counter()
    done = run_local(job, sink=events.append)
    epochs = [e["data"] for e in events if e["type"] == "epoch"]
    last = epochs[-1]
    return {"samples_per_s": steady(epochs), "wall_s": time.perf_counter() - t0,
            "val_accuracy": done["metrics"]["val_accuracy"],
            "devices": {k: round(v["total_tflops"], 6) for k, v in last["devices"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--layers", default="784,256,128,10")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="training samples (default all)")
    args = parser.parse_args()
    arch = Architecture.from_layer_sizes([int(s) for s in args.layers.split(",")])
    hp = {"epochs": args.epochs, "batch_size": args.batch_size,
          "optimizer": {"type": "sgd", "lr": 0.1}}

    engine = run_engine(arch, hp, args.limit)
    print(json.dumps({"case": "engine", "processes": 1, **engine}), flush=True)
    for strategy in ("pipeline", "ddp"):
        base = None
        for world in (1, 2):
            result = run_dist(arch, hp, strategy, world, args.limit)
            base = base or result["samples_per_s"]
            print(json.dumps({"case": strategy, "processes": world, "backend": "gloo", **result,
                              "ratio": result["samples_per_s"] / base,
                              "vs_engine": result["samples_per_s"] / engine["samples_per_s"]}),
                  flush=True)

    if not torch.cuda.is_available():
        print(json.dumps({"case": "nccl-ddp", "skipped": "no CUDA device here"}), flush=True)
        return
    base = None
    for world in (1, 2):
        try:
            result = run_dist(arch, hp, "ddp", world, args.limit, device="auto")
        except JobFailed as exc:
            print(json.dumps({"case": "nccl-ddp", "processes": world, "gpus":
                              torch.cuda.device_count(), "failed": str(exc)}), flush=True)
            continue
        base = base or result["samples_per_s"]
        print(json.dumps({"case": "nccl-ddp", "processes": world, "backend": "nccl",
                          "gpus": torch.cuda.device_count(), **result,
                          "ratio": result["samples_per_s"] / base}), flush=True)


if __name__ == "__main__":
    main()
