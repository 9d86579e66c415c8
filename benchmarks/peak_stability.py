"""How stable the stored matmul peak is across server starts on a busy machine.

    python benchmarks/peak_stability.py                # 5 starts, starts 2 and 4 with a busy neighbour
    python benchmarks/peak_stability.py --starts 9

Each start is a fresh process doing what a server start does (``peaks.measure("cpu")``:
probe once, keep the stored peak if higher) on one temporary ``WORKBENCH_HOME``. On odd starts another process
keeps the cores busy with matmuls. Prints one JSON line:

- ``fresh_probes``: what each start's own probe measured (TFLOPS); ``stored``: the stored peak
  after each start;
- ``stored_ratio``: max/min of the stored peak over the starts after the first (the number a
  user sees move); ``fresh_ratio``: max/min of the raw probes -- the baseline, what one probe
  per start (no store) would have shown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# peaks.measure(), with the raw probe kept for the baseline
START = ("import json; from workbench import devices, peaks; "
         "raw = devices.probe_peak_tflops('cpu'); "
         "print(json.dumps({'probe': raw, 'peak': peaks._raise_to('cpu', raw, 'probe').tflops}))")
BUSY = ("import torch, time\n"
        "a = torch.randn(1024, 1024); end = time.time() + 600\n"
        "while time.time() < end: a @ a\n")


def one_start(env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", START], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "WORKBENCH_HOME": home}
        fresh, stored = [], []
        for start in range(args.starts):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if start % 2 else None
            try:
                if busy:
                    time.sleep(1.0)
                result = one_start(env)
            finally:
                if busy:
                    busy.kill()
                    busy.wait()
            fresh.append(result["probe"])
            stored.append(result["peak"])
    later = stored[1:] or stored
    print(json.dumps({
        "benchmark": "peak_stability", "starts": args.starts,
        "fresh_probes": [round(p, 4) for p in fresh], "stored": [round(p, 4) for p in stored],
        "stored_ratio": round(max(later) / min(later), 3),
        "fresh_ratio": round(max(fresh) / min(fresh), 3),
    }))


if __name__ == "__main__":
    main()
