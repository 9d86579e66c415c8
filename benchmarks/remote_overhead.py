"""What training through a Jupyter kernel costs, against training in-process.

    python benchmarks/remote_overhead.py                  # Fashion-MNIST (local IDX), 5 epochs
    python benchmarks/remote_overhead.py --dataset mnist --limit 20000

The same ``RunSpec`` runs (a) in this process through ``workbench.train.job.execute`` and (b) in
a fresh local ipykernel through ``LocalKernelExecutor`` (the code path remote nodes use too:
the same kernel code, events as display data over iopub). Modes alternate, ``--repeats`` times
each, best kept, to damp noise from other work on the machine. Prints one JSON line:

- ``ratio``: training samples/s in the kernel / in-process, as the engine measures it per epoch
  (the number the app shows); target >= 0.9.
- ``ratio_run``: samples trained / seconds from ``run.started`` to the terminal event, so event
  transport (and the weights coming back) is included.
- ``kernel_startup_s``: submit -> ``run.started`` (kernel start, imports, data load) -- paid once
  per run, reported separately because it does not scale with the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from workbench import events as ev
from workbench.executors.kernel import LocalKernelExecutor
from workbench.spec import Architecture
from workbench.train.job import RunSpec, execute


class Timeline:
    """A sink that keeps arrival times of the events that matter here."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.started: float | None = None
        self.ended: float | None = None
        self.n_train = 0
        self.epochs: list[dict[str, Any]] = []
        self.terminal: dict[str, Any] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        if event["type"] == ev.RUN_STARTED:
            self.started, self.n_train = now, event["data"]["n_train"]
        elif event["type"] == ev.EPOCH:
            self.epochs.append(event["data"])
        elif event["type"] in ev.TERMINAL:
            self.ended, self.terminal = now, event

    def summary(self) -> dict[str, float]:
        assert self.terminal and self.terminal["type"] == ev.RUN_COMPLETED, self.terminal
        assert self.started is not None and self.ended is not None
        return {
            # the engine's own per-epoch measurement (training phase only)
            "samples_per_s": statistics.fmean(e["samples_per_s"] for e in self.epochs),
            # everything after run.started: evaluation, events, weights coming back
            "run_samples_per_s": self.n_train * len(self.epochs) / (self.ended - self.started),
            "startup_s": self.started - self.t0,
            "wall_s": self.ended - self.t0,
        }


def in_process(spec: RunSpec) -> dict[str, float]:
    timeline = Timeline()
    execute(spec, sink=timeline)
    return timeline.summary()


def in_kernel(executor: LocalKernelExecutor, spec: RunSpec) -> dict[str, float]:
    timeline = Timeline()
    handle = executor.submit(spec, timeline)
    handle.join(timeout=1800)
    return timeline.summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--layers", default="784,128,64,10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in both modes (default: torch's default); 1 makes "
                        "the comparison robust to other work competing for the cores")
    args = parser.parse_args()
    env = None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
               "MKL_NUM_THREADS": str(args.threads)}

    layers = [int(n) for n in args.layers.split(",")]
    arch = Architecture.from_layer_sizes(layers, num_classes=layers[-1]).to_json()
    hp = {"epochs": args.epochs, "batch_size": args.batch_size,
          "optimizer": {"type": "adam", "lr": 1e-3}}

    def spec(tag: str) -> RunSpec:
        return RunSpec(run_id=f"r_bench_{tag}", architecture=arch, hyperparams=hp,
                       dataset=args.dataset, device="cpu", limit=args.limit, offline=True)

    executor = LocalKernelExecutor(env=env)
    results: dict[str, list[dict[str, float]]] = {"in_process": [], "kernel": []}
    try:
        for i in range(args.repeats):
            results["in_process"].append(in_process(spec(f"p{i}")))
            results["kernel"].append(in_kernel(executor, spec(f"k{i}")))
    finally:
        executor.close()

    def best(mode: str, key: str) -> float:
        return max(r[key] for r in results[mode])

    base, kern = best("in_process", "samples_per_s"), best("kernel", "samples_per_s")
    base_run, kern_run = best("in_process", "run_samples_per_s"), best("kernel", "run_samples_per_s")
    print(json.dumps({
        "benchmark": "remote_overhead",
        "dataset": args.dataset, "epochs": args.epochs, "layers": layers,
        "batch_size": args.batch_size, "limit": args.limit, "repeats": args.repeats,
        "cpu_count": os.cpu_count(), "threads": args.threads,
        "in_process_samples_per_s": round(base, 1),
        "kernel_samples_per_s": round(kern, 1),
        "ratio": round(kern / base, 3),
        "in_process_run_samples_per_s": round(base_run, 1),
        "kernel_run_samples_per_s": round(kern_run, 1),
        "ratio_run": round(kern_run / base_run, 3),
        "kernel_startup_s": round(min(r["startup_s"] for r in results["kernel"]), 2),
        "in_process_startup_s": round(min(r["startup_s"] for r in results["in_process"]), 2),
        "target_ratio": 0.9,
    }))


if __name__ == "__main__":
    main()
