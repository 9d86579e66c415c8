"""The network builder: native-spec networks (``workbench.netspec``) -- an input shape and
conv2d / pool / flatten / batchnorm / layernorm / dropout / linear / activation layers, each with
its own parameters; the shipped presets (``examples/architectures``: MLP, LeNet-5, a small VGG)
load with one click.

Every edit re-validates through ``NetSpec`` (the same rules and messages as ``/api/v1`` and the
CLI), so a shape error names its layer and shapes ("layers[3]: conv2d expects [C, H, W], got
[128]") on that layer's row; each valid layer shows its output shape, parameters and FLOPs. The
valid spec is published on ``AppState.network``; the MNIST MLP builder (``builder.py``) stays
as it is, for the MNIST MLP API's form.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import panel as pn
import param
from panel.viewable import Viewer
from pydantic import ValidationError

from ..netspec import LAYER_FIELDS, NET_LAYER_TYPES, NetLayer, NetSpec, infer_layers
from ..spec import error_messages
from .builder import split_layer_errors
from .state import AppState
from .theme import CSS, escape_html, escape_markdown, glyph_button, html

PRESET_DIR = Path(__file__).resolve().parents[2] / "examples" / "architectures"
# what a new layer of each type starts with (its required fields)
DEFAULTS: dict[str, dict[str, Any]] = {
    "conv2d": {"out": 8, "kernel": 3, "padding": 1}, "maxpool2d": {"kernel": 2},
    "avgpool2d": {"kernel": 2}, "linear": {"out": 10}, "dropout": {"p": 0.25},
}
FIELD_LABELS = {"out": "out", "kernel": "kernel", "stride": "stride", "padding": "pad",
                "p": "p"}
ROW_CSS = CSS + """
.wb-err { color: #b42318; font-size: 13px; }
.wb-cost { font-family: ui-monospace, monospace; font-size: 12.5px; color: #344054; }
"""
BOX_CSS = """
:host(.wb-layer) { border: 1px solid #e3e6ea; border-radius: 8px; padding: 4px 8px;
                   margin: 3px 0; background: #fff; }
:host(.wb-layer-error) { border-color: #d64545; background: #fff4f4; }
"""


def presets() -> dict[str, dict[str, Any]]:
    """The architecture files shipped in the repository, by file stem."""
    if not PRESET_DIR.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(PRESET_DIR.glob("*.json"))}


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def parse_shape(text: str) -> list[int]:
    """``"1, 28, 28"`` or ``"[13]"`` -> ``[1, 28, 28]`` (ValueError naming the input)."""
    parts = [p for p in re.split(r"[\s,\[\]x×]+", text.strip()) if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"input shape {text!r}: expected integers like '1, 28, 28' or '13'"
                         ) from None


class NetLayerRow(Viewer):
    """One layer's widgets: its type and the fields that type takes."""

    def __init__(self, builder: NetBuilder, index: int, layer: dict[str, Any]):
        super().__init__()
        self.index = index
        kind = layer["type"]
        self.type = pn.widgets.Select(options=list(NET_LAYER_TYPES), value=kind, width=120,
                                      margin=(2, 4), css_classes=[f"net-layer-{index}-type"])
        self.type.param.watch(lambda e: builder.set_layer_type(index, e.new), "value")
        required, optional = LAYER_FIELDS.get(kind, (frozenset(), frozenset()))
        self.fields: dict[str, Any] = {}
        for name in ("out", "kernel", "stride", "padding", "p"):
            if name not in required | optional:
                continue
            if name == "p":
                widget: Any = pn.widgets.FloatInput(label="p", value=layer.get("p", 0.25),
                                                    start=0.0, end=0.99, step=0.05, width=80)
            else:
                widget = pn.widgets.IntInput(label=FIELD_LABELS[name], value=layer.get(name),
                                             start=0 if name == "padding" else 1, end=65536,
                                             width=80, placeholder="default")
            widget.margin = (2, 4)
            widget.css_classes = [f"net-layer-{index}-{name}"]
            widget.param.watch(lambda e, n=name: builder.set_field(index, n, e.new), "value")
            self.fields[name] = widget
        self.cost = html("", sizing_mode="stretch_width", margin=(22, 6),
                         stylesheets=[ROW_CSS], css_classes=[f"net-layer-{index}-shape"])
        self.error = html("", visible=False, margin=(0, 8, 4, 8), stylesheets=[ROW_CSS],
                          css_classes=[f"net-layer-{index}-error"])
        remove = glyph_button("✕", f"remove layer {index}", width=34, margin=(20, 1),
                              color="light", css_classes=[f"net-layer-{index}-remove"])
        remove.on_click(lambda _: builder.remove_layer(index))
        self._layout = pn.Column(
            pn.Row(html(f"#{index}", width=28, margin=(26, 2)), self.type,
                   *self.fields.values(), self.cost, remove, sizing_mode="stretch_width"),
            self.error, css_classes=["wb-layer", f"net-layer-{index}"], stylesheets=[BOX_CSS],
            sizing_mode="stretch_width", margin=0)

    def show(self, cost_html: str, error: str | None) -> None:
        self.cost.object = cost_html
        self.error.object = f"<span class='wb-err'>⚠ {escape_html(error)}</span>" if error else ""
        self.error.visible = bool(error)
        self._layout.css_classes = ["wb-layer", f"net-layer-{self.index}",
                                    *(["wb-layer-error"] if error else [])]

    def __panel__(self) -> pn.Column:
        return self._layout


class NetBuilder(Viewer):
    """Edit a native-spec network; see shapes, costs and errors live."""

    state = param.ClassSelector(class_=AppState)
    input_shape = param.List(default=[1, 28, 28], item_type=int, doc="[C, H, W] or [features]")
    layers = param.List(default=[], item_type=dict, doc="layer dicts of the native spec")
    preset = param.Selector(default=None, objects=[None], allow_None=True)
    errors = param.List(default=[], doc="spec error messages (empty = valid)")
    layer_errors = param.Dict(default={}, doc="{layer index: message}")

    def __init__(self, state: AppState | None = None, **params: Any):
        state = state or AppState()
        super().__init__(state=state, **params)
        self._presets = presets()
        self.param.preset.objects = [None, *self._presets]
        self._rows: list[NetLayerRow] = []
        self._rows_box = pn.Column(sizing_mode="stretch_width", margin=0)
        self._summary = html("", sizing_mode="stretch_width", css_classes=["net-summary"])
        self._alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                    css_classes=["net-alert"], sizing_mode="stretch_width")
        self._shape_input = pn.widgets.TextInput(label="Input shape", width=160,
                                                 value=", ".join(map(str, self.input_shape)),
                                                 css_classes=["net-input-shape"])
        self._shape_input.param.watch(lambda e: self.set_input_shape(e.new), "value")
        self._shape_error = ""
        if not self.layers and "lenet5" in self._presets:
            self.load(self._presets["lenet5"])
        else:
            self._rebuild_rows()
            self._refresh()

    # ---- edits (also the API for tests and notebooks) -------------------------------------------
    def load(self, spec: dict[str, Any]) -> None:
        """Show ``spec`` (a native spec JSON)."""
        if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) \
                or not isinstance(spec.get("input_shape"), list):
            raise ValueError("expected a JSON object with 'input_shape' and 'layers'")
        self._shape_error = ""
        self.input_shape = [int(d) for d in spec["input_shape"]]
        self._shape_input.value = ", ".join(map(str, self.input_shape))
        self.layers = [dict(x) for x in spec["layers"]]

    def set_input_shape(self, text: str) -> None:
        try:
            shape = parse_shape(text)
        except ValueError as exc:
            self._shape_error = str(exc)
            self._refresh()
            return
        self._shape_error = ""
        if shape != self.input_shape:
            self.input_shape = shape
        else:
            self._refresh()

    def add_layer(self, kind: str) -> None:
        self.layers = [*self.layers, {"type": kind, **DEFAULTS.get(kind, {})}]

    def remove_layer(self, index: int) -> None:
        self.layers = [x for i, x in enumerate(self.layers) if i != index]

    def set_layer_type(self, index: int, kind: str) -> None:
        if self.layers[index]["type"] != kind:
            layers = list(self.layers)
            layers[index] = {"type": kind, **DEFAULTS.get(kind, {})}
            self.layers = layers

    def set_field(self, index: int, name: str, value: Any) -> None:
        layers = [dict(x) for x in self.layers]
        if value is None:
            layers[index].pop(name, None)
        else:
            layers[index][name] = value
        if layers != self.layers:
            self.layers = layers

    def to_json(self) -> dict[str, Any]:
        return {"input_shape": list(self.input_shape), "layers": [dict(x) for x in self.layers]}

    # ---- reactions --------------------------------------------------------------------------
    @param.depends("preset", watch=True)
    def _load_preset(self) -> None:
        if self.preset:
            self.load(self._presets[self.preset])

    @param.depends("layers", watch=True)
    def _on_layers(self) -> None:
        if [x["type"] for x in self.layers] != [r.type.value for r in self._rows]:
            self._rebuild_rows()
        self._refresh()

    @param.depends("input_shape", "state.dataset", watch=True)
    def _refresh(self) -> None:
        try:
            NetSpec.model_validate(self.to_json(),
                                   context={"num_classes": self.state.num_classes})
            messages: list[str] = []
        except ValidationError as exc:
            messages = error_messages(exc)
        if self._shape_error:
            messages = [self._shape_error, *messages]
        per_layer, general = split_layer_errors(messages)
        self.errors, self.layer_errors = messages, per_layer
        self._alert.object = "<br>".join(escape_markdown(m) for m in general)
        self._alert.visible = bool(general)
        infos = self._infos()
        for row in self._rows:
            info = infos[row.index] if row.index < len(infos) else None
            cost = ""
            if info is not None:
                cost = f"<span class='wb-cost'>→ {shape_text(info.output_shape)}"
                if info.params:
                    cost += f" · {info.params:,} params · {info.forward_flops:,} FLOPs"
                cost += "</span>"
            row.show(cost, per_layer.get(row.index))
        params_ = sum(i.params for i in infos)
        status = ("<span style='color:#067647'>✔ valid</span>" if not messages else
                  f"<span style='color:#b42318'>✖ {len(messages)} problem(s)</span>")
        self._summary.object = (
            "<div class='wb-kpis'><div class='wb-kpi'><div class='k'>status</div>"
            f"<div class='v'>{status}</div></div><div class='wb-kpi'><div class='k'>"
            f"parameters</div><div class='v net-params'>{params_:,}</div></div></div>")
        spec = None if messages else self.to_json()
        if self.state.network != spec:
            self.state.network = spec

    def _infos(self) -> list[Any]:
        """Shapes and costs of the longest prefix of layers that fits (so the rows before a
        mistake keep showing theirs)."""
        try:
            layers = [NetLayer.model_validate(x) for x in self.layers]
        except ValidationError:
            layers = []
            for x in self.layers:
                try:
                    layers.append(NetLayer.model_validate(x))
                except ValidationError:
                    break
        for end in range(len(layers), 0, -1):
            try:
                return infer_layers(tuple(self.input_shape), layers[:end])
            except (ValueError, ValidationError):
                continue
        return []

    def _rebuild_rows(self) -> None:
        self._rows = [NetLayerRow(self, i, x) for i, x in enumerate(self.layers)]
        self._rows_box.objects = self._rows or [html("<i>No layers yet: add one below or load "
                                                     "a preset.</i>")]

    @param.depends("state.dataset")
    def _io(self) -> pn.viewable.Viewable:
        return html(f"<div class='wb-io'>→ <b>{self.state.num_classes}</b> classes "
                    f"({escape_html(self.state.dataset)})</div>", margin=(26, 10))

    def __panel__(self) -> pn.viewable.Viewable:
        add = []
        for kind in NET_LAYER_TYPES:
            button = pn.widgets.Button(label=f"+ {kind}", css_classes=[f"net-add-{kind}"],
                                       width=104, margin=(2, 2))
            button.on_click(lambda _, k=kind: self.add_layer(k))
            add.append(button)
        preset = pn.widgets.Select.from_param(self.param.preset, label="Preset", width=180,
                                              css_classes=["net-preset"])
        return pn.Column(
            self._summary,
            pn.Row(self._shape_input, self._io, pn.layout.HSpacer(), preset),
            self._alert, self._rows_box,
            pn.FlexBox(*add, margin=(8, 0)),
            sizing_mode="stretch_width")
