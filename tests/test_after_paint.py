"""``fill_after_paint``'s fallback: a served page whose browser never echoes (here a Bokeh
client, which runs no browser-side callbacks) still gets the part below after FALLBACK_MS."""

from __future__ import annotations

import time

import panel as pn
from bokeh.client import pull_session

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
