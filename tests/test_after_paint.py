"""``fill_after_paint``: a served page whose browser never echoes (here a Bokeh client, which
runs no browser-side callbacks) still gets the part below after FALLBACK_MS; in Chromium the
part below waits for what ``wait_for`` names to be on screen."""

from __future__ import annotations

import time

import panel as pn
from bokeh.client import pull_session

from tests.utils.browser import chromium, needs_chromium
from tests.utils.server import free_port
from workbench.ui import after_paint


def test_filled_without_the_echo_after_the_fallback(monkeypatch):
    monkeypatch.setattr(after_paint, "FALLBACK_MS", 300)  # read when a column is made
    built: list[pn.Column] = []
    echoes: list[pn.widgets.TextInput] = []

    def app() -> pn.Column:
        column = after_paint.fill_after_paint(lambda: [pn.pane.Markdown("below")])
        (hidden,) = column.objects  # until filled: the hidden ask / done widgets
        echoes.append(hidden.objects[1])
        built.append(column)
        return pn.Column("top", column)

    port = free_port()
    server = pn.serve({"/": app}, port=port, threaded=True, show=False,
                      websocket_origin=[f"127.0.0.1:{port}"], start=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the server thread starts listening
            try:
                session = pull_session(url=f"http://127.0.0.1:{port}/")
                break
            except OSError:
                time.sleep(0.2)
        try:
            while time.monotonic() < deadline and not (
                    built and any(isinstance(o, pn.pane.Markdown) for o in built[0].objects)):
                time.sleep(0.1)
            (column,), (done,) = built, echoes
            assert [getattr(o, "object", o) for o in column.objects] == ["below"]
            assert done.value == ""  # filled by the fallback: no echo came
        finally:
            session.close()
    finally:
        server.stop()


@needs_chromium
def test_in_a_browser_filled_once_what_it_waits_for_is_shown(monkeypatch):
    """A view added to a served page, as a tab is when opened, whose echo waits for
    ``wait_for`` (here shown 1 s later, inside a pane's shadow root): the part below is built
    after that, and long before either timeout."""
    monkeypatch.setattr(after_paint, "FALLBACK_MS", 30_000)
    monkeypatch.setattr(after_paint, "WAIT_FOR_MS", 30_000)
    times: dict[str, float] = {}

    def app() -> pn.Column:
        slot = pn.pane.HTML("<p>not yet</p>", css_classes=["slot"])

        def show() -> None:
            times["shown"] = time.monotonic()
            slot.object = "<p class='target'>here</p>"

        def parts() -> list:
            times["filled"] = time.monotonic()
            return [pn.pane.Markdown("below", css_classes=["below"])]

        page = pn.Column(slot)

        def open_view() -> None:
            page.append(after_paint.fill_after_paint(parts, wait_for=[".slot", ".target"]))
            pn.state.curdoc.add_timeout_callback(show, 1000)

        pn.state.onload(open_view)
        return page

    port = free_port()
    server = pn.serve({"/": app}, port=port, threaded=True, show=False,
                      websocket_origin=[f"127.0.0.1:{port}"], start=True)
    try:
        with chromium() as browser:
            page = browser.new_page()
            start = time.monotonic()
            page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
            page.locator(".below").get_by_text("below").wait_for(timeout=20_000)
            assert times["shown"] < times["filled"] < start + 20, (times, start)
            page.close()
    finally:
        server.stop()
