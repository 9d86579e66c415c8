"""Debian's Chromium (playwright) against a real ``workbench serve``: the builder driven by the
keyboard alone (labelled inputs, Tab order, Enter adds a layer), and the Devices view's node
actions on a real ``jupyter server`` (register, check, launch on it, remove), with no console
error. Skipped when /usr/bin/chromium is missing."""

from __future__ import annotations

import os

import pytest

from tests.test_remote_nodes import start_jupyter
from tests.utils.browser import chromium, needs_chromium, watch
from tests.utils.server import start_server

pytestmark = needs_chromium

# The focused element through the shadow roots Bokeh renders widgets in: its tag, text and
# accessible label (what a screen reader would announce).
FOCUSED = """() => {
  let el = document.activeElement;
  while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement;
  const label = el && el.labels && el.labels.length ? el.labels[0].textContent.trim() : null;
  return {tag: el ? el.tagName : null, text: el ? (el.innerText || '').trim() : '', label};
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("kbhome"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def _open(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.problems = watch(page)
    page.goto(server.app_url)
    page.get_by_text("predicted epoch time").wait_for(timeout=90_000)
    return context, page


def _tab_to(page, wanted, *, back: bool = False, limit: int = 120) -> list[str]:
    """Press Tab (Shift+Tab: ``back``) until ``wanted(focused)``; returns what got focus."""
    seen = []
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if back else "Tab")
        focused = page.evaluate(FOCUSED)
        seen.append(focused["label"] or focused["text"])
        if wanted(focused):
            return seen
    raise AssertionError(f"never focused; focus went: {seen}")


def test_builder_by_keyboard_only(server, browser):
    context, page = _open(browser, server)
    try:
        # Every layer input has an accessible name (its label).
        for name in ("Layer 0 type", "Layer 0 in", "Layer 0 out", "Layer 2 out"):
            assert page.get_by_label(name, exact=True).count() == 1, name
        seen = _tab_to(page, lambda f: f["text"] == "+ linear")
        order = [seen.index(n) for n in ("Layer 0 type", "Layer 0 in", "Layer 0 out",
                                         "Layer 1 type", "Layer 2 in", "Layer 2 out")]
        assert order == sorted(order), seen  # Tab walks the rows as they read
        page.keyboard.press("Enter")  # adds a linear layer, wired 10 -> 10
        page.get_by_label("Layer 3 out", exact=True).wait_for(timeout=60_000)
        assert page.evaluate(FOCUSED)["text"] == "+ linear"  # focus stays: Enter again adds
        page.keyboard.press("Enter")
        page.get_by_label("Layer 4 out", exact=True).wait_for(timeout=60_000)
        # Back to the first new layer's width, by keyboard: type it, Enter.
        _tab_to(page, lambda f: f["label"] == "Layer 3 out", back=True)
        page.keyboard.press("Control+A")
        page.keyboard.type("32")
        page.keyboard.press("Enter")
        # The chain follows (layer 4 now takes 32) and the URL keeps the edit.
        page.wait_for_function("decodeURIComponent(location.search).includes('\"out\":32')",
                               timeout=30_000)
        assert page.get_by_label("Layer 4 in", exact=True).input_value() == "32"
        assert page.problems == []
    finally:
        context.close()


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    node = start_jupyter(tmp_path_factory.mktemp("kbnode"), "tok-" + os.urandom(4).hex())
    yield node
    node.kill()


def test_devices_register_check_launch_remove(server, browser, jupyter):
    context, page = _open(browser, server)
    try:
        page.locator(".bk-tab", has_text="Devices").click()
        page.get_by_label("Jupyter Server URL").fill(jupyter.url)
        page.get_by_label("Token").fill(jupyter.token)
        page.get_by_label("Name").fill("box-k")
        page.locator(".node-register button").click()
        page.get_by_text("Registered box-k").wait_for(timeout=240_000)
        page.locator(".wb-targets-table", has_text="node box-k").wait_for(timeout=30_000)
        with server.http() as http:  # the REST API sees it: one registry
            (node,) = http.get("/api/v1/nodes").json()["data"]["nodes"]
        assert node["name"] == "box-k" and node["status"] == "online"

        page.locator(".node-check button").click()
        page.get_by_text("box-k is online").wait_for(timeout=60_000)

        page.locator(".launch-target select").select_option(node["id"])
        page.locator(".launch-on-target button").click()
        page.locator(".wb-kpis", has_text="r_").first.wait_for(timeout=60_000)  # Train tab
        with server.http() as http:
            (run,) = http.get("/api/runs").json()["items"]
        assert run["target"] == node["id"]

        page.locator(".bk-tab", has_text="Devices").click()
        page.locator(".node-remove button").click()
        page.get_by_text(f"Removed {node['id']}").wait_for(timeout=60_000)
        with server.http() as http:
            assert http.get("/api/v1/nodes").json()["data"]["nodes"] == []
        assert page.problems == []
    finally:
        context.close()
