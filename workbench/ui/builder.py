"""Architecture builder: add, remove, reorder and edit layers, with live costs and errors.

Every edit re-validates the architecture through ``workbench.spec`` (the same rules and the same
messages as the REST API) and recomputes shapes, parameters and FLOPs per sample with
``workbench.model.layer_costs``. The offending layer of an invalid state is highlighted with the
spec's message. The valid architecture JSON is published on ``AppState.architecture``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import panel as pn
import param
from panel.viewable import Viewer
from pydantic import ValidationError

from ..model import layer_costs
from ..spec import ACTIVATIONS, Architecture, Layer, error_messages, validate_architecture
from .state import SAMPLE_SOURCES, AppState
from .theme import CSS, escape_html, escape_markdown, glyph_button, html

LAYER_CHOICES = ("linear", *ACTIVATIONS)
PRESETS: dict[str, list[int]] = {
    "784-128-10": [784, 128, 10],
    "784-64-10": [784, 64, 10],
    "784-256-128-10": [784, 256, 128, 10],
    "784-128-64-10": [784, 128, 64, 10],
    "784-512-256-128-10": [784, 512, 256, 128, 10],
}
_LAYER_REF = re.compile(r"^(?:architecture\.)?layers\[(\d+)\]")


def split_layer_errors(messages: list[str]) -> tuple[dict[int, str], list[str]]:
    """The spec's messages as ``({layer index: its first message}, [the others])``: a layer's
    message goes on its row, the rest above the builder (both builders show them this way)."""
    per_layer: dict[int, str] = {}
    general: list[str] = []
    for message in messages:
        if m := _LAYER_REF.match(message):
            per_layer.setdefault(int(m.group(1)), message)
        else:
            general.append(message)
    return per_layer, general

BOX_CSS = """
:host(.wb-layer) { border: 1px solid #e3e6ea; border-radius: 8px; padding: 4px 8px;
                   margin: 3px 0; background: #fff; }
:host(.wb-layer-error) { border-color: #d64545; background: #fff4f4; }
"""
ROW_CSS = CSS + """
.wb-err { color: #b42318; font-size: 13px; }
.wb-cost { font-family: ui-monospace, monospace; font-size: 12.5px; color: #344054; }
.wb-idx { font-family: ui-monospace, monospace; color: #667085; font-size: 12px; }
"""


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)


def _fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min"


def layers_from_sizes(sizes: list[int], activation: str = "relu") -> list[dict[str, Any]]:
    """``[784, 128, 10]`` -> linear/activation layer dicts (the distributed-trainer form)."""
    return Architecture.from_layer_sizes(sizes, activation=activation).to_json()["layers"]


def collapsing_linears(layers: list[dict[str, Any]]) -> list[str]:
    """Two linear layers with no activation between them (dropout is none) compute one linear
    map: valid, but the extra layer only adds parameters."""
    hints, last_linear, activated = [], None, True
    for i, layer in enumerate(layers):
        kind = layer.get("type")
        if kind == "linear":
            if last_linear is not None and not activated:
                hints.append(f"layers[{last_linear}] and layers[{i}] are linear with no "
                             "activation between them: together they are one linear map. "
                             "Add e.g. a relu between them, or remove one.")
            last_linear, activated = i, False
        elif kind in ACTIVATIONS:
            activated = True
    return hints


# A label kept for screen readers and keyboard users' tools, out of the row's layout.
HIDDEN_LABEL_CSS = """
label { position: absolute !important; width: 1px; height: 1px; margin: -1px; padding: 0;
  overflow: hidden; clip-path: inset(50%); white-space: nowrap; border: 0; }
"""


class LayerRow(Viewer):
    """The widgets of one layer. Structure (type) changes go through the builder."""

    index = param.Integer(default=0)

    def __init__(self, builder: Builder, index: int, layer: dict[str, Any]):
        super().__init__(index=index)
        self._builder = builder
        # Each input has a label (its accessible name: "Layer 1 out"), visually hidden: the
        # row's "#1" and arrow already say it to the eye.
        self.type = pn.widgets.Select(
            label=f"Layer {index} type", options=list(LAYER_CHOICES), value=layer["type"],
            width=110, margin=(2, 4), css_classes=[f"layer-{index}-type"],
            stylesheets=[HIDDEN_LABEL_CSS],
        )
        self.in_ = pn.widgets.IntInput(
            label=f"Layer {index} in", value=layer.get("in") or 1, start=1, end=65536,
            width=90, margin=(2, 4), css_classes=[f"layer-{index}-in"],
            visible=layer["type"] == "linear", stylesheets=[HIDDEN_LABEL_CSS],
        )
        self.out = pn.widgets.IntInput(
            label=f"Layer {index} out", value=layer.get("out") or 1, start=1, end=65536,
            width=90, margin=(2, 4), css_classes=[f"layer-{index}-out"],
            visible=layer["type"] == "linear", stylesheets=[HIDDEN_LABEL_CSS],
        )
        self.arrow = html("→", visible=layer["type"] == "linear", margin=(8, 0))
        self.label = html(f"<span class='wb-idx'>#{index}</span>", width=28,
                                  margin=(8, 2), stylesheets=[ROW_CSS])
        self.cost = html("", sizing_mode="stretch_width", margin=(8, 6),
                                 stylesheets=[ROW_CSS])
        self.error = html("", visible=False, margin=(0, 8, 4, 36),
                                  stylesheets=[ROW_CSS], css_classes=[f"layer-{index}-error"])
        self.up = glyph_button("↑", f"move layer {index} up", width=34, margin=(2, 1),
                               disabled=index == 0, css_classes=[f"layer-{index}-up"])
        self.down = glyph_button("↓", f"move layer {index} down", width=34, margin=(2, 1),
                                 css_classes=[f"layer-{index}-down"])
        self.remove = glyph_button("✕", f"remove layer {index}", width=34, margin=(2, 1),
                                   color="light", css_classes=[f"layer-{index}-remove"])
        self.up.on_click(lambda _: builder.move_layer(self.index, -1))
        self.down.on_click(lambda _: builder.move_layer(self.index, +1))
        self.remove.on_click(lambda _: builder.remove_layer(self.index))
        self.type.param.watch(lambda e: builder.set_layer_type(self.index, e.new), "value")
        self.in_.param.watch(lambda e: builder.set_size(self.index, "in", e.new), "value")
        self.out.param.watch(lambda e: builder.set_size(self.index, "out", e.new), "value")
        self._layout = pn.Column(
            pn.Row(self.label, self.type, self.in_, self.arrow, self.out, self.cost,
                   self.up, self.down, self.remove, sizing_mode="stretch_width"),
            self.error,
            css_classes=["wb-layer", f"layer-{index}"], stylesheets=[BOX_CSS],
            sizing_mode="stretch_width", margin=(0, 0),
        )

    def sync(self, layer: dict[str, Any]) -> None:
        """Show ``layer``'s sizes without firing the edit callbacks."""
        if layer["type"] != "linear":
            return
        self._builder._syncing = True
        try:
            self.in_.value, self.out.value = layer["in"], layer["out"]
        finally:
            self._builder._syncing = False

    def show(self, cost_html: str, error: str | None) -> None:
        self.cost.object = cost_html
        self.error.object = f"<span class='wb-err'>⚠ {escape_html(error)}</span>" if error else ""
        self.error.visible = bool(error)
        classes = ["wb-layer", f"layer-{self.index}"]
        self._layout.css_classes = classes + (["wb-layer-error"] if error else [])

    def __panel__(self) -> pn.Column:
        return self._layout


class Builder(Viewer):
    """Edit an architecture; see its costs and validity live."""

    state = param.ClassSelector(class_=AppState, doc="the session's shared state")
    input_size = param.Integer(default=784, bounds=(1, 65536), doc="features per sample")
    layers = param.List(default=[], item_type=dict, doc="layer dicts of the architecture JSON")
    preset = param.Selector(default=None, objects=[None, *PRESETS], allow_None=True,
                            doc="load a preset architecture")
    errors = param.List(default=[], doc="spec error messages of the current state (empty=valid)")
    layer_errors = param.Dict(default={}, doc="{layer index: message} of the offending layers")
    hints = param.List(default=[], doc="advice on a valid but doubtful architecture")
    name = param.String(default="builder")

    def __init__(self, state: AppState | None = None, **params: Any):
        state = state or AppState()
        params.setdefault("layers", layers_from_sizes(PRESETS["784-128-10"]))
        super().__init__(state=state, **params)
        self._syncing = False  # True while rows show new values: not user edits
        self._rows: list[LayerRow] = []
        self._rows_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self._summary = html("", sizing_mode="stretch_width", css_classes=["wb-summary"])
        self._alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                    css_classes=["wb-builder-alert"], sizing_mode="stretch_width")
        self._json = pn.widgets.TextAreaInput(
            label="Architecture JSON (MNIST MLP API)", height=180, sizing_mode="stretch_width",
            css_classes=["wb-arch-json"],
        )
        self._import_error = pn.pane.Alert("", alert_type="danger", visible=False,
                                           css_classes=["wb-import-error"])
        self._hint = pn.pane.Alert("", alert_type="warning", visible=False,
                                   css_classes=["wb-builder-hint"], sizing_mode="stretch_width")
        self._rebuild_rows()
        self._refresh()

    # ---- edits (also the public API for notebooks and tests) ---------------------------------
    def add_layer(self, type_: str) -> None:
        """Append a layer; a linear layer is wired from the previous linear layer's output."""
        layer: dict[str, Any] = {"type": type_}
        if type_ == "linear":
            outs = [x["out"] for x in self.layers if x["type"] == "linear"]
            layer.update({"in": outs[-1] if outs else self.input_size,
                          "out": self.state.num_classes})
        self.layers = [*self.layers, layer]

    def remove_layer(self, index: int) -> None:
        self.layers = [x for i, x in enumerate(self.layers) if i != index]

    def move_layer(self, index: int, delta: int) -> None:
        j = index + delta
        if 0 <= index < len(self.layers) and 0 <= j < len(self.layers):
            layers = list(self.layers)
            layers[index], layers[j] = layers[j], layers[index]
            self.layers = layers

    def set_layer_type(self, index: int, type_: str) -> None:
        layers = list(self.layers)
        if layers[index]["type"] == type_:
            return
        if type_ == "linear":
            outs = [x["out"] for x in layers[:index] if x["type"] == "linear"]
            layers[index] = {"type": "linear", "in": outs[-1] if outs else self.input_size,
                             "out": self.state.num_classes}
        else:
            layers[index] = {"type": type_}
        self.layers = layers

    def set_size(self, index: int, key: str, value: int | None) -> None:
        """Edit a linear layer's ``in`` or ``out``. Changing ``out`` carries the new width into
        the next linear layer's ``in`` when that one matched, so chains stay connected."""
        layers = [dict(x) for x in self.layers]
        if self._syncing or value is None or layers[index]["type"] != "linear" \
                or layers[index].get(key) == value:
            return
        old = layers[index].get(key)
        layers[index][key] = value
        if key == "out":
            nxt = next((x for x in layers[index + 1:] if x["type"] == "linear"), None)
            if nxt is not None and nxt["in"] == old:
                nxt["in"] = value
        self.layers = layers

    def clear(self) -> None:
        self.layers = []

    def load_json(self, text_or_data: str | dict[str, Any]) -> None:
        """Import an architecture (MNIST MLP API JSON, or ``{"layer_sizes": [...]}``)."""
        data = json.loads(text_or_data) if isinstance(text_or_data, str) else text_or_data
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object with 'input_size' and 'layers'")
        if "layer_sizes" in data:
            data = {"input_size": data["layer_sizes"][0],
                    "layers": layers_from_sizes(list(data["layer_sizes"]))}
        if not isinstance(data.get("layers"), list) or "input_size" not in data:
            raise ValueError("expected a JSON object with 'input_size' and 'layers'")
        self.input_size = int(data["input_size"])
        self.layers = [dict(x) for x in data["layers"]]

    def to_json(self) -> dict[str, Any]:
        return {"input_size": self.input_size, "layers": [dict(x) for x in self.layers]}

    @property
    def architecture(self) -> Architecture | None:
        """The validated Architecture, or None while the state is invalid."""
        try:
            return validate_architecture(self.to_json(), num_classes=self.state.num_classes)
        except ValidationError:
            return None

    # ---- reactions ---------------------------------------------------------------------------
    @param.depends("preset", watch=True)
    def _load_preset(self) -> None:
        if self.preset:
            self.input_size = PRESETS[self.preset][0]
            self.layers = layers_from_sizes(PRESETS[self.preset])

    @param.depends("layers", watch=True)
    def _on_layers(self) -> None:
        if [x["type"] for x in self.layers] != [r.type.value for r in self._rows]:
            self._rebuild_rows()
        else:
            for row, layer in zip(self._rows, self.layers):
                row.sync(layer)
        self._refresh()

    @param.depends("input_size", "state.dataset", "state.peak_tflops", "state.train_samples",
                   "state.samples_source", watch=True)
    def _refresh(self) -> None:
        self._validate()
        self._show_costs()
        self._json.value = json.dumps(self.to_json(), indent=1)
        arch = None if self.errors else self.to_json()
        if self.state.architecture != arch:
            self.state.architecture = arch

    def _rebuild_rows(self) -> None:
        self._rows = [LayerRow(self, i, layer) for i, layer in enumerate(self.layers)]
        if self._rows:
            self._rows[-1].down.disabled = True
        self._rows_box.objects = self._rows or [
            html("<i>No layers yet: add one below or load a preset.</i>")
        ]

    def _validate(self) -> None:
        try:
            validate_architecture(self.to_json(), num_classes=self.state.num_classes)
            messages: list[str] = []
        except ValidationError as exc:
            messages = error_messages(exc)
        per_layer, general = split_layer_errors(messages)
        self.errors, self.layer_errors = messages, per_layer
        self._alert.object = "<br>".join(escape_markdown(m) for m in general)
        self._alert.visible = bool(general)
        self.hints = collapsing_linears(self.layers)
        self._hint.object = "<br>".join(escape_markdown(m) for m in self.hints)
        self._hint.visible = bool(self.hints)

    def _costs(self) -> list[Any] | None:
        """Per-layer costs even for an invalid chain (each layer valid on its own)."""
        try:
            layers = [Layer.model_validate(x) for x in self.layers]
        except ValidationError:
            return None
        if not layers:
            return []
        return layer_costs(Architecture.model_construct(input_size=self.input_size, layers=layers))

    def _show_costs(self) -> None:
        costs = self._costs()
        for row in self._rows:
            c = costs[row.index] if costs else None
            html = ""
            if c is not None:
                html = f"<span class='wb-cost'>out ({c.output_shape[0]},)"
                if c.params:
                    html += (f" · {_fmt(c.params)} params · {_fmt(c.forward_flops)} FLOPs fwd"
                             f" · {_fmt(c.backward_flops)} bwd")
                html += "</span>"
            row.show(html, self.layer_errors.get(row.index))
        self._summary.object = self._summary_html(costs)

    def _summary_html(self, costs: list[Any] | None) -> str:
        if not costs:
            return "<div class='wb-kpis'><b>No valid layers</b></div>"
        params_ = sum(c.params for c in costs)
        fwd = sum(c.forward_flops for c in costs)
        train = fwd + sum(c.backward_flops for c in costs)
        peak = self.state.peak_tflops
        n = self.state.train_samples
        if peak:
            epoch_s = train * n / (peak * 1e12)
            predicted = (f"{_fmt_seconds(epoch_s)}<small> on {self.state.device} at its measured"
                         f" {peak:.3g} TFLOPS, {_fmt(n)} samples"
                         f"{SAMPLE_SOURCES.get(self.state.samples_source, '')}</small>")
        else:
            predicted = "measuring device peak…"
        status = ("<span style='color:#067647'>✔ valid</span>" if not self.errors else
                  f"<span style='color:#b42318'>✖ {len(self.errors)} problem(s)</span>")
        kpi = "<div class='wb-kpi'><div class='k'>{}</div><div class='v'>{}</div></div>"
        return (
            "<div class='wb-kpis'>"
            + kpi.format("status", status)
            + kpi.format("parameters", f"{params_:,}")
            + kpi.format("FLOPs / sample (fwd)", _fmt(fwd))
            + kpi.format("FLOPs / sample (train)", _fmt(train))
            + f"<div class='wb-kpi wb-predicted'><div class='k'>predicted epoch time</div>"
            f"<div class='v'>{predicted}</div></div>"
            + "</div>"
        )

    # ---- view --------------------------------------------------------------------------------
    def _import(self, _: Any) -> None:
        try:
            self.load_json(self._json.value)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            self._import_error.object = f"Import failed: {escape_markdown(exc)}"
            self._import_error.visible = True
            return
        # Imported: every problem of it at once (the rows show one per layer).
        self._import_error.object = (
            f"Imported with {len(self.errors)} problem(s):<br>"
            + "<br>".join(f"• {escape_markdown(m)}" for m in self.errors)) if self.errors else ""
        self._import_error.visible = bool(self.errors)

    @param.depends("input_size", "state.dataset")
    def _io(self) -> pn.viewable.Viewable:
        return html(f"<div class='wb-io'>input <b>{self.input_size}</b> features → "
                    f"<b>{self.state.num_classes}</b> classes ({self.state.dataset})</div>",
                    margin=(18, 10))

    def __panel__(self) -> pn.viewable.Viewable:
        add = []
        for kind in LAYER_CHOICES:
            button = pn.widgets.Button(label=f"+ {kind}", color="primary"
                                       if kind == "linear" else "default",
                                       css_classes=[f"add-{kind}"], width=92)
            button.on_click(lambda _, k=kind: self.add_layer(k))
            add.append(button)
        clear = pn.widgets.Button(label="Clear", color="light", css_classes=["clear-layers"],
                                  width=70)
        clear.on_click(lambda _: self.clear())
        preset = pn.widgets.Select.from_param(self.param.preset, label="Preset", width=200)
        importer = pn.widgets.Button(label="Import JSON", css_classes=["import-json"])
        importer.on_click(self._import)
        download = pn.widgets.FileDownload(
            callback=lambda: __import__("io").StringIO(json.dumps(self.to_json(), indent=2)),
            filename="architecture.json", label="Export JSON", color="default",
        )
        header = pn.Row(self._io, pn.layout.HSpacer(), preset)
        return pn.Column(
            self._summary,
            header,
            self._alert,
            self._hint,
            self._rows_box,
            pn.Row(*add, clear, margin=(8, 0)),
            pn.Card(self._json, pn.Row(importer, download), self._import_error,
                    title="Import / export", collapsed=True, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
