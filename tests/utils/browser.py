"""Debian's Chromium under playwright, started the one way every browser test and benchmark uses.

    with chromium() as browser:                  # headless, no sandbox, no background traffic
        context = offline_context(browser)       # non-loopback requests aborted, recorded
        page = context.new_page()
        problems = watch(page)                   # console errors and uncaught page errors
        ...
        assert context.external == [] and problems == []

``APP_TABS`` and ``each_tab`` visit the app's tabs (in a page, or a frame locator for the app
inside JupyterLab) and wait for what shows that each tab's views were built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# A browser test module's ``pytestmark``; without the browser (or playwright) it is skipped.
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="needs Debian's Chromium at /usr/bin/chromium")

# What shows that a tab's views were built and their browser libraries loaded (the Build tab's
# "predicted epoch time" shows on load).
APP_TABS = {"Train": ".launch-run button", "Runs": ".runs-table .tabulator-header",
            "Playground": "canvas.digit-canvas",
            "Devices": ".chart-device-tflops .js-plotly-plot"}


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (playwright's ``Browser``), closed on exit."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def offline_context(browser: Any, width: int = 1440, height: int = 900, **options: Any) -> Any:
    """A new browser session in which every request to a host other than 127.0.0.1 is aborted
    (and recorded in ``context.external``), as on a machine without internet."""
    context = browser.new_context(viewport={"width": width, "height": height}, **options)
    context.external = []

    def route(r: Any) -> None:
        if urlsplit(r.request.url).hostname == "127.0.0.1":
            r.continue_()
        else:
            context.external.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    return context


def watch(page: Any, step: Callable[[], str] | None = None, *,
          failed_requests: bool = False) -> list[str]:
    """The page's console errors and uncaught errors (of every frame), as they happen; each
    prefixed with ``step()`` when given (what the test was doing). ``failed_requests``: also
    requests that failed (a blocked or refused request is a problem too)."""
    problems: list[str] = []

    def problem(text: str) -> None:
        problems.append(f"{step()}: {text}" if step else text)

    page.on("console", lambda m: problem(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problem(str(e)))
    if failed_requests:
        page.on("requestfailed", lambda r: problem(f"request failed: {r.url}"))
    return problems


def each_tab(scope: Any, tabs: dict[str, str] = APP_TABS, timeout_ms: int = 60_000
             ) -> Iterator[str]:
    """Click each of the app's ``tabs`` in ``scope`` (a page, or a frame locator) and wait for
    its content; yields the tab's name once its content shows."""
    for tab, css in tabs.items():
        scope.locator(".bk-tab", has_text=tab).click()
        scope.locator(css).first.wait_for(timeout=timeout_ms)
        yield tab
