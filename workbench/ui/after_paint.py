"""Fill part of a view only after the browser has painted what was sent before it.

A tab's heavy lower half (many widgets) built in the next server tick still competed with the
browser's layout of the tab's top (a small machine: the server's build and the browser's
layout share the CPU) and its patch could arrive before the table was on screen. Here a hidden
widget's value change travels after the first patch; its browser-side callback waits for the
next frame to be painted and echoes back, and only then the server builds the rest. A page that
never echoes (no browser-side callbacks) gets the rest after ``FALLBACK_MS`` anyway.

``wait_for`` names what must be on screen first, e.g. a table's first row: a widget's view is
painted before its own content (Tabulator draws its rows a few frames later), and a patch that
arrived in between held those rows back by ~0.4 s while the browser built the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import panel as pn

FALLBACK_MS = 4000
WAIT_FOR_MS = 3000  # the longest the browser waits for ``wait_for`` before echoing anyway
# After the frame that shows the first patch (rAF runs before that paint, the timeout after it)
# in which every selector of ``chain`` matches, each inside the previous one's match. Panel's
# views live in shadow roots, so each step searches them too.
_ECHO_JS = """
if (!source.value) { return; }
const inside = (root, sel) => {
  const hit = root.querySelector(sel);
  if (hit) { return hit; }
  for (const el of root.querySelectorAll("*")) {
    const deep = el.shadowRoot && inside(el.shadowRoot, sel);
    if (deep) { return deep; }
  }
  return null;
};
const shown = () => {
  let at = document;
  for (const sel of chain) {
    at = (at.shadowRoot && inside(at.shadowRoot, sel)) || inside(at, sel);
    if (!at) { return false; }
  }
  return true;
};
const until = Date.now() + wait_ms;
const check = () => requestAnimationFrame(() => setTimeout(() => {
  if (shown() || Date.now() > until) { done.value = source.value; } else { check(); }
}, 0));
check();
"""


def fill_after_paint(parts: Callable[[], list[Any]], wait_for: Sequence[str] = (),
                     **column_params: Any) -> pn.Column:
    """A column that gets ``parts()`` once the browser has painted the page sent so far, and in
    it ``wait_for`` (CSS selectors, each inside the previous one's match), for at most
    ``WAIT_FOR_MS``; at once when not served (e.g. in a notebook cell or a test)."""
    column = pn.Column(**column_params)
    doc = pn.state.curdoc
    if doc is None or doc.session_context is None:
        column.objects = parts()
        return column
    ask = pn.widgets.TextInput(visible=False, css_classes=["wb-paint-ask"])
    done = pn.widgets.TextInput(visible=False, css_classes=["wb-paint-done"])
    ask.jscallback(args={"done": done, "chain": list(wait_for), "wait_ms": WAIT_FOR_MS},
                   value=_ECHO_JS)
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
