"""The app in Debian's Chromium (playwright) against a real ``workbench serve`` subprocess.

One walk through the app, as a user would: log in with the link ``workbench serve`` prints,
build 784-64-10 by clicking, break and fix a dimension, launch a small training run and watch the
loss chart gain points without reloading, draw a digit and get a prediction, run a SQL query,
look at the devices view. Screenshots of every view go to ``tests/utils/shots.screenshot_dir()``
(``docs/screenshots/`` only when WORKBENCH_REFRESH_SCREENSHOTS=1). And the login:
no key -> the login form (401) and no websocket, a bad key refused, a good one -> the app.
Skipped when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.utils.browser import chromium, each_tab, needs_chromium, offline_context, watch
from tests.utils.server import start_server
from tests.utils.shots import screenshot_dir

EPOCHS = 20  # a few seconds of training: the 250 ms poll draws it part-done many times

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("browserhome"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def page(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    page.step = "load"
    page.problems = watch(page, lambda: page.step, failed_requests=True)
    page.goto(server.app_url)  # the login link: cookie, then the clean URL
    page.get_by_text("predicted epoch time").wait_for(timeout=60_000)
    assert page.url.split("?")[0] == server.url + "/" and "token=" not in page.url
    yield page
    page.context.close()


def _websocket_status(url: str) -> int:
    """The HTTP status of a websocket handshake to Panel's ``/ws`` (403: refused). It asks for
    the ``bokeh`` subprotocol, as Panel's client does: without it ``/ws`` is the REST API's
    event socket (the documents' ``wss://host/ws``, ``workbench.api.v1.ws.DocumentSocket``)."""
    parts = urlsplit(url)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /ws HTTP/1.1", f"Host: {parts.netloc}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
             "Sec-WebSocket-Protocol: bokeh", f"Origin: {url}"]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.recv(1024).split(b" ", 2)[1])


def test_login(server, browser):
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(server.url + "/")
        assert response.status == 401
        page.locator("form.wb-login input[name=token]").wait_for()
        assert page.locator(".bk-tab").count() == 0
        assert _websocket_status(server.url) == 403  # and no session without a key

        page.fill("input[name=token]", "not-a-key")
        page.click("button[type=submit]")
        page.get_by_text("That key is not valid").wait_for()
        assert page.goto(server.url + "/?token=also-wrong").status == 401
        assert not context.cookies()
        page.screenshot(path=str(screenshot_dir() / "login.png"))

        page.fill("input[name=token]", server.token)
        page.click("button[type=submit]")
        page.get_by_text("predicted epoch time").wait_for(timeout=60_000)
        (cookie,) = context.cookies()  # the page rendered: its websocket passed with it
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # a server-side session id, never the key itself
        assert cookie["value"].startswith("wbs_") and server.token not in cookie["value"]
        assert page.url.split("?")[0] == server.url + "/" and "token=" not in page.url
    finally:
        context.close()


def _tab(page, name: str) -> None:
    page.step = name
    page.locator(".bk-tab", has_text=name).click()


def _set_number(page, css: str, value: int) -> None:
    box = page.locator(f"{css} input")
    box.fill(str(value))
    box.press("Enter")


def _trace_len(page, chart: str, trace: str) -> int:
    plot = page.locator(f".{chart} .js-plotly-plot")
    if plot.count() == 0:
        return 0
    return plot.first.evaluate(
        "(el, name) => { const t = (el.data || []).find(t => t.name === name);"
        " return t && t.x ? t.x.length : 0 }", trace)


def _button_names(page) -> set[str]:
    """The accessible names of the page's buttons in Chromium's accessibility tree."""
    nodes = page.context.new_cdp_session(page).send("Accessibility.getFullAXTree")["nodes"]
    return {n["name"]["value"] for n in nodes
            if n.get("role", {}).get("value") == "button" and "name" in n}


def test_walkthrough(page, server):

    # Build 784-64-10 by clicking.
    page.locator(".clear-layers button").click()
    page.get_by_text("No layers yet").wait_for()
    page.locator(".add-linear button").click()
    page.locator(".layer-0-out input").wait_for()
    _set_number(page, ".layer-0-out", 64)
    page.locator(".add-relu button").click()
    page.locator(".add-linear button").click()
    page.locator(".layer-2-in input").wait_for()
    assert page.locator(".layer-2-in input").input_value() == "64"
    page.get_by_text("✔ valid").first.wait_for()  # the MLP builder (the first sub-tab)
    page.get_by_text("50,890").wait_for()  # 784*64+64 + 64*10+10 parameters
    # The row buttons show only ↑ ↓ ✕; what a screen reader announces says what they do: as
    # playwright finds them, and as Chromium's own accessibility tree names them.
    names = ("move layer 2 up", "move layer 2 down", "remove layer 2", "move layer 0 up")
    for name in names:
        page.get_by_role("button", name=name, exact=True).wait_for()
    assert page.get_by_role("button", name="move layer 2 down", exact=True).is_disabled()
    assert set(names) <= _button_names(page)

    # A wrong edit shows the spec's message on the offending layer; fixing it clears it.
    _set_number(page, ".layer-2-in", 32)
    message = "layers[2]: linear 'in' is 32 but the previous linear layer (layers[0]) outputs 64"
    page.get_by_text(message).wait_for()
    page.screenshot(path=str(screenshot_dir() / "build-error.png"), full_page=True)
    _set_number(page, ".layer-2-in", 64)
    page.get_by_text(message).wait_for(state="hidden")
    page.get_by_text("✔ valid").first.wait_for()  # the MLP builder (the first sub-tab)
    page.screenshot(path=str(screenshot_dir() / "build.png"), full_page=True)

    # Launch a small run and watch the loss chart gain points, no reload.
    _tab(page, "Train")
    page.locator(".launch-run button").wait_for()
    _set_number(page, ".hp-epochs", EPOCHS)
    _set_number(page, ".hp-limit", 3000)
    page.locator(".hp-batch input").fill("10")
    page.locator(".hp-batch input").press("Enter")
    # Record the loss trace's length at every redraw, in the page itself.
    page.locator(".chart-loss .js-plotly-plot").first.evaluate(
        "el => { window.__lossPoints = [];"
        " el.on('plotly_afterplot', () => { const t = el.data.find(t => t.name === 'train loss');"
        " window.__lossPoints.push(t && t.x ? t.x.length : 0) }) }")
    page.step = "launch"
    page.locator(".launch-run button").click()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and _trace_len(page, "chart-loss", "train loss") < EPOCHS:
        page.wait_for_timeout(100)
    seen = page.evaluate("window.__lossPoints")
    assert seen[-1] == EPOCHS, seen
    grown = [n for n in seen if 0 < n < EPOCHS]  # drawn while the run was still going
    assert grown, f"the chart never showed a partial run: {seen}"
    page.get_by_text("succeeded").first.wait_for(timeout=60_000)
    page.screenshot(path=str(screenshot_dir() / "train.png"), full_page=True)

    # Runs: the run is in the table; a SQL query returns rows.
    _tab(page, "Runs")
    page.locator(".runs-table").get_by_text("succeeded").first.wait_for()
    sql = page.locator(".sql-input textarea")
    page.step = "sql"
    sql.fill("SELECT state, count(*) AS n_runs FROM runs GROUP BY state")
    page.locator(".run-sql button").click()
    page.locator(".sql-result").get_by_text("n_runs").wait_for()
    page.screenshot(path=str(screenshot_dir() / "runs.png"), full_page=True)

    # Playground: draw a "7" and get a prediction.
    _tab(page, "Playground")
    canvas = page.locator("canvas.digit-canvas")
    canvas.wait_for()
    box = canvas.bounding_box()
    x0, y0 = box["x"], box["y"]
    page.step = "draw"
    page.mouse.move(x0 + 70, y0 + 60)
    page.mouse.down()
    for x, y in [(210, 60), (180, 140), (150, 220)]:
        page.mouse.move(x0 + x, y0 + y, steps=8)
    page.mouse.up()
    page.locator(".prediction-label").wait_for(timeout=30_000)
    assert page.locator(".prediction-label").inner_text().strip() in list("0123456789")
    page.get_by_text("drawing").first.wait_for()
    page.step = "confusion"
    page.locator(".confusion-button button").click()
    page.locator(".chart-confusion").get_by_text("test images · accuracy").wait_for(
        timeout=60_000)
    page.wait_for_timeout(500)  # let plotly finish drawing the heatmap for the screenshot
    page.screenshot(path=str(screenshot_dir() / "playground.png"), full_page=True)

    # Devices: the distributed trainer's stages and the TFLOPS history per device.
    _tab(page, "Devices")
    page.locator(".chart-device-tflops .js-plotly-plot").wait_for(timeout=30_000)
    page.get_by_text("No distributed-trainer jobs yet").wait_for()
    page.screenshot(path=str(screenshot_dir() / "devices.png"), full_page=True)

    assert page.problems == []


def test_three_sessions_offline(server, browser):
    """Every tab of the app shows its content in three browser sessions in a row (1024, 1440
    and 1920 px wide, no sideways scrolling), with every
    non-loopback request blocked: nothing is fetched from a CDN, no console error (the second
    session's Runs tab used to wait forever for a Tabulator stylesheet from cdn.holoviz.org)."""
    for session, width in enumerate((1024, 1440, 1920)):
        context = offline_context(browser, width)
        try:
            page = context.new_page()
            problems = watch(page)
            page.goto(server.app_url)
            page.get_by_text("predicted epoch time").wait_for(timeout=60_000)
            if width < 1920:
                page.screenshot(path=str(screenshot_dir() / f"tab-{width}-build.png"),
                                full_page=True)
            for tab in each_tab(page):
                page.wait_for_timeout(300)  # let the tab's layout settle
                scroll = page.evaluate("document.documentElement.scrollWidth")
                assert scroll <= width, f"{tab} scrolls sideways at {width} px: {scroll}"
                if width < 1920:  # every tab at 1024 and 1440 px, for docs/screenshots
                    page.wait_for_timeout(500)
                    page.screenshot(path=str(screenshot_dir() / f"tab-{width}-{tab.lower()}.png"),
                                    full_page=True)
            assert context.external == [], (session, context.external)
            assert problems == [], (session, problems)
        finally:
            context.close()
    # Each session registers the libraries it loaded with Panel: no warning about them.
    assert "extension was not loaded" not in server.log()


def test_builder_survives_reload_and_is_a_link(server, browser):
    """The architecture is kept in the page's URL: a reload shows the same layers, and the
    address opened in another browser (after its login) shows them too."""
    context = browser.new_context()
    other = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.app_url)
        page.get_by_text("predicted epoch time").wait_for(timeout=60_000)
        page.locator(".add-relu button").click()
        page.locator(".add-linear button").click()
        page.locator(".layer-4-out input").wait_for()
        page.wait_for_function("location.search.includes('layers=')")
        link = page.url
        page.reload()
        page.locator(".layer-4-out input").wait_for(timeout=60_000)
        assert page.locator(".layer-5-type").count() == 0
        shared = other.new_page()
        shared.goto(link + f"&token={server.token}")  # the recipient logs in with their key
        shared.locator(".layer-4-out input").wait_for(timeout=60_000)
        assert "layers=" in shared.url and "token=" not in shared.url
    finally:
        context.close()
        other.close()
