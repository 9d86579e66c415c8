"""Time from ``workbench serve`` accepting connections to the first full render of ``/``.

    python benchmarks/app_first_render.py [--repeats 3]

Chromium (Debian's, headless) is started first and waits; the server is started on a fresh
WORKBENCH_HOME; the moment its port accepts a TCP connection the browser opens the login link
``workbench serve`` prints (``/?token=<key>``: cookie, redirect to ``/``) and the clock stops when the Build view is rendered (its "predicted epoch time" figure is visible, which
needs the page, Panel's JS and the websocket session). A second load of the same server (a fresh browser
context, the same link) is the warm number. Baseline, measured in the same run: a one-pane Panel app served the same way
(FastAPI + ``panel.io.fastapi``), so ``ratio`` = ours / that floor. Target: < 1 s.
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.utils: the browser's launch

BASELINE_APP = textwrap.dedent("""
    import sys, uvicorn, panel as pn
    from fastapi import FastAPI
    from panel.io.fastapi import add_applications
    app = FastAPI()
    add_applications({"/": lambda: pn.pane.Markdown("# predicted epoch time")}, app=app)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_accepting(port: int, process: subprocess.Popen, timeout: float = 180) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.perf_counter()
        except OSError:
            time.sleep(0.005)
    raise TimeoutError("server never accepted connections")


TOKEN = "wb_benchmark-key"


def measure(browser, command: list[str], port: int, env: dict[str, str]) -> tuple[float, float]:
    """(cold, warm) seconds from accepting connections to the rendered page."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        page = browser.new_page()
        accepted = wait_accepting(port, process)
        page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}", wait_until="commit")
        page.get_by_text("predicted epoch time").first.wait_for(timeout=120_000)
        cold = time.perf_counter() - accepted
        page.close()
        page = browser.new_page()  # a fresh context: no cache, no cookie
        start = time.perf_counter()
        page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}", wait_until="commit")
        page.get_by_text("predicted epoch time").first.wait_for(timeout=120_000)
        warm = time.perf_counter() - start
        page.close()
        return cold, warm
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from tests.utils.browser import chromium

    results: dict[str, list[tuple[float, float]]] = {"workbench": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp, chromium() as browser:
        baseline_script = Path(tmp) / "baseline_app.py"
        baseline_script.write_text(BASELINE_APP)
        for i in range(args.repeats):
            for case in results:
                port = free_port()
                home = Path(tmp) / f"home-{case}-{i}"
                env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_OFFLINE": "1",
                       "WORKBENCH_TOKEN": TOKEN}
                command = (
                    [sys.executable, "-m", "workbench.cli", "serve", "--port", str(port)]
                    if case == "workbench" else [sys.executable, str(baseline_script), str(port)]
                )
                results[case].append(measure(browser, command, port, env))
    base_cold = statistics.median(c for c, _ in results["baseline"])
    base_warm = statistics.median(w for _, w in results["baseline"])
    for case, runs in results.items():
        cold = statistics.median(c for c, _ in runs)
        warm = statistics.median(w for _, w in runs)
        print(json.dumps({
            "benchmark": "app_first_render", "case": case, "repeats": args.repeats,
            "first_render_s": round(cold, 3), "warm_render_s": round(warm, 3),
            "ratio": round(cold / base_cold, 2), "warm_ratio": round(warm / base_warm, 2),
            "target_s": 1.0, "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }))


if __name__ == "__main__":
    main()
