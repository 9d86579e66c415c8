"""Comparing runs in the app's Runs tab, and the static report opened offline, in Debian's
Chromium (playwright) against a real ``workbench serve``. Skipped without /usr/bin/chromium."""

from __future__ import annotations

import time

import pytest

from tests.utils.browser import chromium, needs_chromium, watch
from tests.utils.server import start_server
from tests.utils.shots import screenshot_dir

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("runsbrowser"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runs(server) -> list[str]:
    """Two finished tracked runs that differ in lr."""
    made = []
    with server.http() as http:
        for name, lr, losses in (("lr-small", 0.001, [2.0, 1.2, 0.8]),
                                 ("lr-large", 0.1, [2.2, 1.9, 1.7])):
            run = http.post("/api/runs", json={"name": name, "experiment": "sweep",
                                               "config": {"lr": lr}, "tags": ["sweep"]}).json()
            points = [{"key": "val_loss", "value": v, "step": i, "epoch": i + 1}
                      for i, v in enumerate(losses)]
            assert http.post(f"/api/runs/{run['run_id']}/log-batch",
                             json={"metrics": points}).status_code == 200
            assert http.post(f"/api/runs/{run['run_id']}/finish", json={}).status_code == 200
            made.append(run["run_id"])
    return made


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def _trace_names(page, css: str) -> list[str]:
    return page.locator(f"{css} .js-plotly-plot").first.evaluate(
        "el => (el.data || []).map(t => t.name)")


def _runs_tab(server, browser, width: int, height: int):
    """A new page on the app's Runs tab, once the runs show: (page, its problems, the table)."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems = watch(page)
    page.goto(server.app_url)
    page.locator(".bk-tab", has_text="Runs").click()
    table = page.locator(".runs-table")
    table.get_by_text("lr-small").first.wait_for(timeout=60_000)
    return page, problems, table


def test_compare_selected_runs_in_the_app(server, runs, browser):
    page, problems, table = _runs_tab(server, browser, 1440, 1000)

    # A filter that is not valid says where; a valid one narrows the table.
    box = page.locator(".runs-filter input")
    box.fill("val_loss <")
    box.press("Enter")
    page.locator(".filter-error").get_by_text("position 10").wait_for()
    box.fill("best.val_loss < 1")
    box.press("Enter")
    page.locator(".filter-error").wait_for(state="hidden")
    table.get_by_text("lr-large").wait_for(state="hidden")
    box.fill("")
    box.press("Enter")
    table.get_by_text("lr-large").first.wait_for()

    # Tick both runs: one chart per metric, legends by run name, the diff highlights lr.
    for name in ("lr-small", "lr-large"):
        row = table.locator(".tabulator-row", has_text=name)
        row.locator("input[type=checkbox]").first.click()
    page.locator(".chart-compare-val_loss .js-plotly-plot").first.wait_for(timeout=30_000)
    assert sorted(_trace_names(page, ".chart-compare-val_loss")) == ["lr-large", "lr-small"]
    differs = page.locator(".compare-diff tr.differs")
    differs.first.wait_for()
    assert "hp.lr" in " ".join(differs.all_inner_texts())
    page.locator(".chart-parallel .js-plotly-plot").first.wait_for()
    page.screenshot(path=str(screenshot_dir() / "runs-compare.png"), full_page=True)
    with page.expect_download() as download:
        page.locator(".download-report button").click()
    assert download.value.suggested_filename == "runs-report.html"
    assert problems == []
    page.close()


def _right_edge(locator) -> float:
    box = locator.bounding_box()
    return float("inf") if box is None else box["x"] + box["width"]


def _settles(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_laptop_window_shows_the_results_and_an_empty_table_says_so(server, runs, browser):
    page, problems, table = _runs_tab(server, browser, 1280, 800)
    # The results come right after the name: in view without scrolling sideways (polled: the
    # table lays itself out again a few times on first show).
    header = table.locator(".tabulator-col", has_text="best_val_accuracy").first
    assert _settles(lambda: _right_edge(header) <= 1280), _right_edge(header)
    # Scrolled sideways, the run's id and name stay in view.
    holder = table.locator(".tabulator-tableholder")
    last = table.locator(".tabulator-col", has_text="created_at").first
    assert _settles(lambda: holder.evaluate("el => { el.scrollLeft = 2000; }") is None
                    and _right_edge(last) <= 1280), _right_edge(last)  # scrolled to the end
    name = table.locator(".tabulator-cell", has_text="lr-small").first
    assert _settles(lambda: 0 <= _right_edge(name) <= 1280), _right_edge(name)
    # A filter nothing matches: the table says so, instead of an empty grid.
    box_input = page.locator(".runs-filter input")
    box_input.fill("best.val_loss < -1")
    box_input.press("Enter")
    table.get_by_text("No runs to show").wait_for(timeout=30_000)
    assert problems == []
    page.close()


def test_report_works_offline_and_exports_svg(server, runs, browser, tmp_path):
    with server.http() as http:
        answer = http.post("/api/runs/report", json={"run_ids": runs,
                                                     "metrics": ["val_loss"], "title": "Sweep"})
    assert answer.status_code == 200
    report = tmp_path / "report.html"
    report.write_text(answer.text, encoding="utf-8")
    context = browser.new_context(accept_downloads=True)
    fetched: list[str] = []
    context.route("**/*", lambda route: (fetched.append(route.request.url), route.abort())
                  if not route.request.url.startswith("file:") else route.continue_())
    page = context.new_page()
    problems = watch(page)
    page.goto(report.as_uri())
    page.locator(".chart .js-plotly-plot").first.wait_for(timeout=30_000)
    assert sorted(_trace_names(page, ".chart")) == ["lr-large", "lr-small"]
    assert page.locator("table.diff tr.differs").count() >= 1
    with page.expect_download() as download:
        page.locator(".chart button[data-format=svg]").first.click()
    assert download.value.suggested_filename.endswith(".svg")
    assert fetched == [] and problems == []  # nothing left the file
    context.close()
