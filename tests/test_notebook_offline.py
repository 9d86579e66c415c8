"""The notebook widgets in JupyterLab, in Chromium, with every non-loopback request blocked.

A notebook shows ``wb.builder()`` and ``wb.app()``; both must render from what the kernel and the
Jupyter server send (Bokeh and Panel inlined into the notebook output, the app's files from the
workbench behind the tile's proxy): no request leaves the machine, no console error, and the
builder still works after a click adds a layer (a component made in a callback). Three browser
sessions in a row on one Jupyter server, each re-running the cells: later sessions used to show
"loading…" forever (a stylesheet the first one had fetched from a CDN).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_jupyter_extension import _lab_env
from tests.utils.browser import chromium, each_tab, needs_chromium, offline_context, watch
from workbench.jupyter.server import LocalJupyter

pytestmark = needs_chromium

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


def _run_notebook(page, lab: LocalJupyter) -> None:
    """Open the notebook, wait for its kernel and run every cell afresh."""
    page.goto(f"{lab.url}lab/tree/widgets.ipynb?token={lab.token}")
    page.locator(".jp-Notebook").wait_for(timeout=60_000)
    page.wait_for_function("window.jupyterapp && window.jupyterapp.commands", timeout=60_000)
    # Lab may ask "Select Kernel" although the notebook names python3.
    idle = page.get_by_text("Python 3 (ipykernel) | Idle")
    select = page.locator(".jp-Dialog button", has_text="Select")
    for _ in range(240):
        if select.count() and select.first.is_visible():
            select.first.click()
        if idle.count() and not select.count():
            break
        page.wait_for_timeout(250)
    # Outputs an earlier session autosaved are not this session's widgets.
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    # Not awaited: the command's promise ends with the last cell.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells') }")


def test_widgets_render_offline_in_three_sessions(lab: LocalJupyter) -> None:
    """The builder renders and a click adds (and, by its accessible name, removes) a layer; the
    app in its frame shows every tab's content in the first session, its Build tab in the
    others."""
    with chromium() as browser:
        for session in range(3):
            context = offline_context(browser)
            try:
                page = context.new_page()
                problems = watch(page)
                _run_notebook(page, lab)
                output = page.locator(".jp-OutputArea-output")
                output.locator(".add-linear button").wait_for(timeout=120_000)
                output.get_by_text("✔ valid").first.wait_for()
                # The app's cell starts the workbench owner (slow on a loaded machine, the
                # first time); until that cell ends the kernel leaves the builder's clicks queued.
                app = page.frame_locator("iframe[src*='/workbench/']")
                app.get_by_text("predicted epoch time").wait_for(timeout=240_000)
                output.locator(".add-relu button").click()  # 784-32-10 has layers 0..2
                output.locator(".layer-3-type").wait_for(timeout=60_000)
                output.get_by_role("button", name="remove layer 3", exact=True).click()
                output.locator(".layer-3-type").wait_for(state="detached", timeout=60_000)
                if session == 0:  # the app's Build tab shows above; here every other tab
                    for _ in each_tab(app):
                        pass
                page.wait_for_timeout(1000)  # late stylesheet/script requests of the new rows
                assert context.external == [], (session, context.external)
                assert problems == [], (session, problems)
            finally:
                context.close()
