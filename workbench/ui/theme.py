"""Look and feel: one stylesheet for the app's HTML panes (KPI strips, headings, states).

Panel renders every component in its own shadow root, so page-level CSS does not reach inside;
``html()`` makes an HTML pane that carries this stylesheet. User text goes into panes through
``escape_html`` (HTML panes) or ``escape_markdown`` (Markdown panes such as ``pn.pane.Alert``).
"""

from __future__ import annotations

import html as _html
import re
from typing import Any

import panel as pn

ACCENT = "#2563eb"

CSS = """
:host { font-family: Inter, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.wb-kpis { display: flex; flex-wrap: wrap; gap: 10px; margin: 4px 0 8px 0; }
.wb-kpi { background: #f8fafc; border: 1px solid #e2e8f0; border-radius: 10px;
          padding: 8px 14px; min-width: 110px; }
.wb-kpi .k, .wb-prediction .k { font-size: 11px; text-transform: uppercase;
          letter-spacing: .05em; color: #64748b; }
.wb-kpi .v { font-size: 18px; font-weight: 600; color: #0f172a; margin-top: 2px; }
.wb-kpi .v small { font-size: 11px; font-weight: 400; color: #64748b; }
.wb-predicted { flex: 1 1 260px; }
.wb-state { color: #fff; border-radius: 999px; padding: 2px 10px; font-size: 13px; }
.wb-h { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: #475569;
        margin: 10px 0 0 0; }
.wb-empty { color: #64748b; font-style: italic; padding: 12px 4px; }
.wb-io { color: #334155; }
.wb-prediction { padding: 8px 4px; }
.wb-prediction .big { font-size: 64px; font-weight: 700; color: #2563eb; line-height: 1.1; }
.wb-bar { height: 8px; background: #e2e8f0; border-radius: 999px; overflow: hidden; }
.wb-bar div { height: 100%; background: #2563eb; transition: width .3s; }
code { background: #eef2ff; border-radius: 4px; padding: 1px 5px; font-size: 13px; }
"""

HEADER_CSS = """
:host { width: 100%; }
.wb-header { display: flex; align-items: center; gap: 14px; padding: 12px 22px;
  background: linear-gradient(90deg, #0f172a, #1e3a8a); color: #fff; border-radius: 0 0 12px 12px;
  font-family: Inter, system-ui, sans-serif; }
.wb-header .logo { font-size: 22px; font-weight: 700; letter-spacing: -.01em; }
.wb-header .sub { color: #cbd5e1; font-size: 13px; }
.wb-header .dev { margin-left: auto; font-size: 12px; color: #e2e8f0;
  background: rgba(255,255,255,.12); border-radius: 999px; padding: 4px 12px; }
"""


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:/])")  # ":/": no autolinks


def escape_html(text: Any) -> str:
    """User text (names, errors, addresses, URLs) as an HTML pane's text: shown, never markup.
    (Element content only: quotes stay as they are, so never put it inside an attribute.)"""
    return _html.escape(str(text), quote=False)


def escape_markdown(text: Any) -> str:
    """User text for a Markdown pane (``pn.pane.Alert``): HTML escaped, Markdown's own syntax
    (links, emphasis, autolinked URLs) backslash-escaped, so it shows verbatim."""
    return _html.escape(_MARKDOWN_SPECIALS.sub(r"\\\1", str(text)), quote=False)


def mark_empty(fig: Any, text: str, *, x_range: tuple[float, float] = (0, 1),
               y_range: tuple[float, float] = (0, 1)) -> Any:
    """A chart without points gets axes over ``x_range``/``y_range`` (plotly's default of
    -1..4 or 6 means nothing) and ``text`` in its middle, saying what to do to fill it."""
    if any(len(getattr(t, "x", None) or ()) for t in fig.data):
        return fig
    fig.update_xaxes(range=list(x_range))
    fig.update_yaxes(range=list(y_range))
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(color="#667085", size=13))
    return fig


def html(obj: str = "", **params: Any) -> pn.pane.HTML:
    """An HTML pane styled with the app's stylesheet."""
    params.setdefault("stylesheets", [CSS])
    return pn.pane.HTML(obj, **params)


# Bokeh's buttons take no aria-label: the accessible name is the label's text, pushed out of the
# box (still read by screen readers), and the glyph is CSS generated content whose alternative
# text ("/ ''") is empty, so it is shown but not announced.
_GLYPH_BUTTON_CSS = """
.bk-btn { position: relative; overflow: hidden; white-space: nowrap; text-indent: 100vw; }
.bk-btn::before { content: "%s" / ""; position: absolute; inset: 0; display: flex;
  align-items: center; justify-content: center; text-indent: 0; }
"""


def glyph_button(glyph: str, name: str, **params: Any) -> pn.widgets.Button:
    """A button that shows only ``glyph`` ("↑", "✕") and is announced as ``name`` ("move layer
    2 up") to screen readers (and found by it: ``get_by_role("button", name=...)``)."""
    stylesheets = [*params.pop("stylesheets", []), _GLYPH_BUTTON_CSS % glyph]
    return pn.widgets.Button(label=name, stylesheets=stylesheets, **params)
