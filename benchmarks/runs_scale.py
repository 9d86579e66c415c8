"""The runs table, compare and filter at scale: 10,000 runs x 100 epochs x 10 metrics.

    python benchmarks/runs_scale.py [--runs 10000] [--epochs 100] [--repeat 5] [--browser]
                                    [--read-s S] [--home DIR]

``--home DIR`` keeps the generated store in DIR and reuses it on later runs (``--runs`` and
``--epochs`` are then what DIR was made with), e.g. to time old and new code in turn.

Generates a store directly through ``Store`` (runs and 10 M metric points written in bulk by
SQL, finished runs summarised as the store does when a run ends), then times, in the process
that owns the store (the server's time, no HTTP):

- ``runs_table``: the newest 100 rows with the default columns (what ``GET /api/runs/table``,
  ``workbench runs`` and ``wb.runs()`` ask for);
- ``sort_by_metric``: the same, sorted by best validation accuracy;
- ``filter``: ``val_accuracy > 0.9 and optimizer = adam and tag:baseline``;
- ``compare_10``: ``compare_runs`` of 10 runs, 3 metrics (diff + 3,000 points);
- ``runs_tab``: building the app's Runs tab (``RunsView``, its newest ``MAX_RUNS`` = 500 rows) server-side;
- ``runs_tab_browser`` (with ``--browser``): a real ``workbench serve`` on the generated home
  and Debian's Chromium: from the click on the Runs tab (once the first page has rendered and
  the network is idle, plus ``--read-s``) until its first table row is visible (median of 3 new
  browser pages;
  ``ratio``: over the median first render of the same pages, the Build tab).

Each prints one JSON line: median ms over ``--repeat``, the 200 ms goal (1,500 ms for the tab)
and ``ratio`` = ours / the baseline measured in the same run: the same numbers aggregated from
the raw ``metrics`` points (what the table would cost without ``run_summary``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.store import Store  # noqa: E402
from workbench.store.summary import backfill_summaries  # noqa: E402

METRICS = ("val_accuracy", "val_loss", "train_loss", "train_accuracy", "samples_per_s",
           "total_tflops", "forward_tflops", "backward_tflops", "grad_norm", "lr_now")
GOAL_MS = 200.0


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def generate(store: Store, runs: int, epochs: int) -> float:
    started = time.perf_counter()
    models = [store.create_model(architecture={"input_size": 784, "layers": [
        {"type": "linear", "in": 784, "out": width}, {"type": "relu"},
        {"type": "linear", "in": width, "out": 10}]}, hyperparams={}, name=f"mlp-{width}")
        for width in (32, 64, 128, 256)]
    ids = [m.model_id for m in models]
    with store._tx() as con:  # bulk: one INSERT ... SELECT per table
        con.execute(
            """
            INSERT INTO runs (run_id, model_id, state, error, epoch, epochs_total, hyperparams,
                dataset, target, device, param_id, created_at, started_at, finished_at,
                updated_at, name, experiment, tags, notes)
            SELECT 'r_' || md5(i::VARCHAR), (?::VARCHAR[])[1 + i % 4],
                CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
                CASE WHEN i % 20 = 0 THEN 'diverged: loss is nan' END, ?, ?,
                json_object('epochs', ?, 'batch_size', (32 * (1 + i % 4))::INTEGER,
                            'optimizer', json_object('type', CASE WHEN i % 2 = 0 THEN 'adam'
                                                     ELSE 'sgd' END,
                                                     'lr', 10 ** -(1 + i % 4))),
                'mnist', 'local', 'cpu', NULL,
                TIMESTAMP '2026-01-01' + to_seconds(i * 60),
                TIMESTAMP '2026-01-01' + to_seconds(i * 60 + 1),
                TIMESTAMP '2026-01-01' + to_seconds(i * 60 + 50),
                TIMESTAMP '2026-01-01' + to_seconds(i * 60 + 50),
                'run-' || i, 'exp-' || (i % 20),
                CASE WHEN i % 10 = 0 THEN ['baseline'] ELSE ['sweep'] END, ''
            FROM range(?) t(i)
            """, [ids, epochs, epochs, epochs, runs])
        con.execute(
            """
            INSERT INTO metrics
            SELECT 'r_' || md5(r::VARCHAR), e, e * 100, (?::VARCHAR[])[1 + k],
                CASE WHEN k IN (0, 3) THEN 1 - 0.5 / (1 + e * (0.5 + (r % 97) / 97.0))
                     ELSE random() END,
                TIMESTAMP '2026-01-01' + to_seconds(r * 60 + e * 0.5)
            FROM range(?) a(r), range(1, ? + 1) b(e), range(?) c(k)
            ORDER BY 1, 2, 4
            """, [list(METRICS), runs, epochs, len(METRICS)])
        backfill_summaries(con)
    return time.perf_counter() - started


def timed(fn, repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def naive_table(store: Store) -> None:
    """Baseline: best/final validation metrics of the newest 100 runs from raw points."""
    store._read(
        """
        SELECT r.run_id, max(m.value) FILTER (WHERE m.name = 'val_accuracy'),
               arg_max(m.value, m.epoch) FILTER (WHERE m.name = 'val_loss')
        FROM runs r JOIN metrics m ON m.run_id = r.run_id
        GROUP BY r.run_id, r.created_at ORDER BY r.created_at DESC LIMIT 100
        """)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--browser", action="store_true",
                        help="also time the Runs tab in Chromium (needs /usr/bin/chromium)")
    parser.add_argument("--read-s", type=float, default=0.0,
                        help="seconds a user reads the Build tab before clicking Runs (0: at "
                             "once, while the page still loads its chart and table libraries)")
    parser.add_argument("--home", type=Path, default=None,
                        help="keep the generated store here; reuse it if it is already there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch)
        home.mkdir(parents=True, exist_ok=True)
        in_process(home, args)
        if args.browser:
            in_browser(home, read_s=args.read_s)


def in_browser(home: Path, pages: int = 3, read_s: float = 0.0) -> None:
    from tests.utils.browser import chromium
    from tests.utils.server import start_server

    server = start_server(home, timeout=600)  # a loaded machine opens 10 M points slowly
    samples: list[float] = []
    baseline: list[float] = []  # the same page's first render (the Build tab): the machine's pace
    try:
        with chromium() as browser:
            for _ in range(pages):
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                t0 = time.perf_counter()
                page.goto(server.app_url, timeout=300_000)
                page.get_by_text("predicted epoch time").wait_for(timeout=120_000)
                baseline.append((time.perf_counter() - t0) * 1000)
                page.wait_for_load_state("networkidle")  # a user reading the Build tab first
                page.wait_for_timeout(read_s * 1000)
                t0 = time.perf_counter()
                page.locator(".bk-tab", has_text="Runs").click()
                page.locator(".runs-table .tabulator-row").first.wait_for(timeout=120_000)
                samples.append((time.perf_counter() - t0) * 1000)
                page.close()
    finally:
        server.stop()
    ms, first_render = statistics.median(samples), statistics.median(baseline)
    emit(name="runs_tab_browser", ms=round(ms, 1), goal_ms=1500.0, within_goal=ms <= 1500.0,
         read_s=read_s,
         samples_ms=[round(x) for x in samples], baseline_first_render_ms=round(first_render, 1),
         ratio=round(ms / first_render, 3),
         note="click on the Runs tab until its first row shows (Chromium, new page each); "
              "ratio: over the page's first render (Build tab) in the same run")


def in_process(home: Path, args: argparse.Namespace) -> None:
    reuse = (home / "workbench.duckdb").exists()
    with Store(home / "workbench.duckdb") as store:
        seconds = 0.0 if reuse else generate(store, args.runs, args.epochs)
        points = store._read("SELECT count(*) FROM metrics")[0][0]
        runs = store._read("SELECT count(*) FROM runs")[0][0]
        emit(name="generate", runs=runs, points=points, seconds=round(seconds, 1), reused=reuse)
        baseline = timed(lambda: naive_table(store), args.repeat)
        emit(name="baseline_raw_points_table", ms=round(baseline, 1))

        from workbench.service import Workbench

        service = Workbench(store)
        newest = [r["run_id"] for r in store.runs_table(columns=["run_id"], limit=10).rows]
        cases = {
            "runs_table": lambda: service.runs_table(limit=100),
            "sort_by_metric": lambda: service.runs_table(limit=100, sort="-best_val_accuracy"),
            "filter": lambda: service.runs_table(
                limit=100, filter="val_accuracy > 0.9 and optimizer = adam and tag:baseline"),
            "compare_10": lambda: service.compare_runs(newest),
        }
        for name, fn in cases.items():
            ms = timed(fn, args.repeat)
            emit(name=name, ms=round(ms, 1), goal_ms=GOAL_MS, ratio=round(ms / baseline, 3),
                 within_goal=ms <= GOAL_MS)
        matched = service.runs_table(
            limit=1, filter="val_accuracy > 0.9 and optimizer = adam and tag:baseline").total
        emit(name="filter_matches", runs=matched)

        from workbench.ui.runs import RunsView
        from workbench.ui.state import AppState

        state = AppState(service=service)
        ms = timed(lambda: RunsView(state), max(1, args.repeat // 2))
        emit(name="runs_tab", ms=round(ms, 1), goal_ms=1500.0, ratio=round(ms / baseline, 3),
             within_goal=ms <= 1500.0, note="server-side build of the tab, 500 rows")


if __name__ == "__main__":
    main()
