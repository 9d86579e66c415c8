"""The notebook widgets in JupyterLab, in Chromium, with every non-loopback request blocked.

A notebook shows ``wb.builder()`` and ``wb.app()``; both must render from what the kernel and the
Jupyter server send (Bokeh and Panel inlined into the notebook output, the app's files from the
workbench behind the tile's proxy): no request leaves the machine, no console error, and the
builder still works after a click adds a layer (a component made in a callback).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_jupyter_extension import CHROMIUM, CHROMIUM_ARGS, _lab_env
from tests.test_ui_browser import _offline_context
from workbench.jupyter.server import LocalJupyter

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium")

CELLS = ["from workbench import notebook as wb\nb = wb.builder([784, 32, 10])\nb",
         "wb.app(height=700)"]


def _notebook(path: Path) -> None:
    cells = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
              "source": src} for src in CELLS]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJupyter]:
    home = tmp_path_factory.mktemp("wb-nb-home")
    with LocalJupyter(app="lab", env=_lab_env(home),
                      extra_args=["--LabApp.expose_app_in_browser=True"]) as jp:
        _notebook(jp.root_dir / "widgets.ipynb")
        yield jp


def test_widgets_render_offline(lab: LocalJupyter) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = _offline_context(browser)
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{lab.url}lab/tree/widgets.ipynb?token={lab.token}")
            page.locator(".jp-Notebook").wait_for(timeout=60_000)
            page.wait_for_function("window.jupyterapp && window.jupyterapp.commands",
                                   timeout=60_000)
            # Lab may ask "Select Kernel" although the notebook names python3.
            idle = page.get_by_text("Python 3 (ipykernel) | Idle")
            select = page.locator(".jp-Dialog button", has_text="Select")
            for _ in range(240):
                if select.count() and select.first.is_visible():
                    select.first.click()
                if idle.count() and not select.count():
                    break
                page.wait_for_timeout(250)
            # Not awaited: the command's promise ends with the last cell.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells') }")
            output = page.locator(".jp-OutputArea-output")
            output.locator(".add-linear button").wait_for(timeout=120_000)
            output.get_by_text("✔ valid").first.wait_for()  # the MLP builder (the first sub-tab)
            output.locator(".add-relu button").click()
            output.locator(".layer-2-type").wait_for(timeout=30_000)
            app = page.frame_locator("iframe[src*='/workbench/']")
            app.get_by_text("predicted epoch time").wait_for(timeout=120_000)
            page.wait_for_timeout(1000)  # late stylesheet/script requests of the new row
            assert context.external == []
            assert problems == []
        finally:
            browser.close()
