"""Fill part of a view only after the browser has painted what was sent before it.

A tab's heavy lower half (many widgets) built in the next server tick still competed with the
browser's layout of the tab's top (a small machine: the server's build and the browser's
layout share the CPU) and its patch could arrive before the table was on screen. Here a hidden
widget's value change travels after the first patch; its browser-side callback waits for the
next frame to be painted and echoes back, and only then the server builds the rest. A page that
never echoes (no browser-side callbacks) gets the rest after ``FALLBACK_MS`` anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn

FALLBACK_MS = 4000
# After the frame that shows the first patch: rAF runs before that paint, the timeout after it.
_ECHO_JS = """
if (!source.value) { return; }
requestAnimationFrame(() => setTimeout(() => { done.value = source.value; }, 0));
"""


def fill_after_paint(parts: Callable[[], list[Any]], **column_params: Any) -> pn.Column:
    """A column that gets ``parts()`` once the browser has painted the page sent so far (at
    once when not served, e.g. in a notebook cell or a test)."""
    column = pn.Column(**column_params)
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        column.objects = parts()
        return column
    ask = pn.widgets.TextInput(visible=False, css_classes=["wb-paint-ask"])
    done = pn.widgets.TextInput(visible=False, css_classes=["wb-paint-done"])
    ask.jscallback(args={"done": done}, value=_ECHO_JS)
    column.objects = [pn.Row(ask, done, visible=False, margin=0)]
    filled = False

    def fill(*_: Any) -> None:
        nonlocal filled
        if not filled:
            filled = True
            column.objects = parts()

    done.param.watch(fill, "value")
    pn.state.execute(lambda: setattr(ask, "value", "1"), schedule=True)  # after this patch
    doc.add_timeout_callback(fill, FALLBACK_MS)
    return column
