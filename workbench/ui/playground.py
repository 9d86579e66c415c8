"""Inference playground: draw a digit, upload an image or pick a test sample, and see what a
trained parameter set predicts (label, probabilities, latency); plus its confusion matrix on the
test set. Predictions go through ``Workbench.infer``, the code path of ``POST /infer``.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import panel as pn
import param
import plotly.graph_objects as go
from panel.custom import JSComponent
from panel.viewable import Viewer
from PIL import Image

from ..data.datasets import DATASETS, load_raw
from .mnistify import decode_data_url, mnistify, to_gray, to_png
from .model_files import export_buttons
from .runs import all_runs
from .state import AppState
from .theme import escape_html, escape_markdown, html

INFER_BATCH = 512  # the MNIST MLP API's /infer batch limit


class DigitCanvas(JSComponent):
    """A 280x280 drawing pad (white ink on black, like MNIST); ``value`` is a PNG data URL
    updated at the end of each stroke, ``clear`` wipes it."""

    value = param.String(default="", doc="PNG data URL of the drawing ('' when empty)")
    clear_count = param.Integer(default=0, doc="incremented by clear()")

    _esm = """
    export function render({ model, el }) {
      const canvas = document.createElement("canvas");
      canvas.width = 280; canvas.height = 280;
      canvas.className = "digit-canvas";
      canvas.style.cssText = "background:#000;border-radius:10px;cursor:crosshair;" +
                             "touch-action:none;box-shadow:0 1px 4px rgba(0,0,0,.3)";
      const ctx = canvas.getContext("2d");
      const wipe = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, 280, 280); };
      wipe();
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 20; ctx.lineCap = "round"; ctx.lineJoin = "round";
      let drawing = false;
      const pos = (e) => {
        const r = canvas.getBoundingClientRect();
        return [(e.clientX - r.left) * 280 / r.width, (e.clientY - r.top) * 280 / r.height];
      };
      canvas.addEventListener("pointerdown", (e) => {
        drawing = true; canvas.setPointerCapture(e.pointerId);
        const [x, y] = pos(e); ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x, y); ctx.stroke();
      });
      canvas.addEventListener("pointermove", (e) => {
        if (!drawing) return;
        const [x, y] = pos(e); ctx.lineTo(x, y); ctx.stroke();
      });
      const end = () => {
        if (!drawing) return;
        drawing = false; model.value = canvas.toDataURL("image/png");
      };
      canvas.addEventListener("pointerup", end);
      canvas.addEventListener("pointerleave", end);
      model.on("clear_count", () => { wipe(); });
      el.appendChild(canvas);
    }
    """

    def clear(self) -> None:
        self.value = ""
        self.clear_count += 1


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """``m[i, j]`` = samples of true class ``i`` predicted as ``j``."""
    m = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m


class Playground(Viewer):
    """Pick a trained parameter set and try it on digits."""

    state = param.ClassSelector(class_=AppState)
    param_id = param.Selector(default=None, objects=[], allow_None=True,
                              doc="trained parameter set to use")
    sample_index = param.Integer(default=0, bounds=(0, None), doc="test-set sample")
    prediction = param.Integer(default=None, allow_None=True)
    probabilities = param.List(default=[])
    latency_ms = param.Number(default=None, allow_None=True)
    source = param.String(default="", doc="what was predicted: drawing | upload | test sample")
    message = param.String(default="")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self._labels: dict[str, tuple[str, str]] = {}  # param_id -> (label, dataset)
        self._runs: dict[str, str] = {}  # param_id -> the run that trained it
        self._test: dict[str, Any] = {}  # cached test data per dataset
        self.canvas = DigitCanvas(width=280, height=280, margin=(4, 4))
        self.canvas.param.watch(self._on_drawing, "value")
        self._upload = pn.widgets.FileInput(accept="image/*", css_classes=["digit-upload"])
        self._upload.param.watch(self._on_upload, "value")
        self._preview = pn.pane.PNG(to_png(np.zeros((28, 28), np.float32), 4), width=112,
                                    height=112, css_classes=["digit-preview"])
        self._probs = pn.pane.Plotly(self._prob_figure([]), sizing_mode="stretch_width",
                                     height=260, config={"displaylogo": False},
                                     css_classes=["chart-probabilities"])
        self._confusion = pn.pane.Plotly(go.Figure(layout=dict(height=60, template="plotly_white")),
                                         sizing_mode="stretch_width", height=460,
                                         config={"displaylogo": False},
                                         css_classes=["chart-confusion"])
        self.refresh_params()

    # ---- parameter sets ----------------------------------------------------------------------
    @param.depends("state.runs_changed", watch=True)
    def refresh_params(self) -> None:
        """Parameter sets of succeeded runs, newest first."""
        service = self.state.service
        names = {m.model_id: m.name for m in service.list_models(limit=10_000)}
        self._labels, self._runs = {}, {}
        for r in all_runs(service, state="succeeded"):
            if r.param_id:
                acc = r.metrics.get("val_accuracy")
                label = (f"{names.get(r.model_id, r.model_id)} · {r.dataset} · "
                         f"{r.run_id[:10]}" + (f" · val acc {acc:.3f}" if acc is not None
                                               else ""))
                self._labels[r.param_id] = (label, r.dataset)
                self._runs[r.param_id] = r.run_id
        self.param.param_id.objects = {"—": None, **{v[0]: k for k, v in self._labels.items()}}
        if self.param_id not in self._labels:  # the newest of the chosen dataset's, if any
            same = [k for k, v in self._labels.items() if v[1] == self.state.dataset]
            self.param_id = next(iter(same or self._labels), None)

    @property
    def dataset(self) -> str:
        return self._labels.get(self.param_id or "", ("", "mnist"))[1]

    @property
    def classes(self) -> list[str]:
        """The selected model's dataset's class names."""
        if self.dataset in DATASETS:
            return list(DATASETS[self.dataset].classes)
        return [str(c) for c in self.state.dataset_info(self.dataset).get("classes") or []]

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """(28, 28) [0, 1] pixels -> (1, 784) inputs normalized as the model was trained."""
        if self.dataset not in DATASETS:
            raise ValueError(f"this model was trained on {self.dataset}: drawings and uploads "
                             "are for MNIST / Fashion-MNIST models; pick a test sample")
        info = DATASETS[self.dataset]
        return ((pixels.reshape(1, -1) - info.mean) / info.std).astype(np.float32)

    # ---- predictions ---------------------------------------------------------------------------
    def predict_pixels(self, pixels: np.ndarray, source: str) -> int | None:
        """Show ``pixels`` and the model's prediction for them."""
        self._preview.object = to_png(pixels, 4)
        self.source = source
        if not self.param_id:
            self.message = "No trained parameter set yet: train a model in the Train tab."
            return None
        return self._show_prediction(self.features(pixels))

    def _show_prediction(self, features: Any) -> int:
        """Infer one sample (the model's input, a batch of one) and show the answer."""
        started = time.perf_counter()
        out = self.state.service.infer(self.param_id, features, probabilities=True, labels=True)
        self.latency_ms = (time.perf_counter() - started) * 1000.0
        self.message = ""
        self.probabilities = out["outputs"]["probabilities"][0]
        self.prediction = int(out["outputs"]["labels"][0])
        self._probs.object = self._prob_figure(self.probabilities)
        return self.prediction

    def predict_drawing(self, data_url: str) -> int | None:
        if not data_url:
            return None
        return self.predict_pixels(mnistify(to_gray(decode_data_url(data_url))), "drawing")

    def predict_upload(self, data: bytes) -> int | None:
        image = Image.open(io.BytesIO(data))
        return self.predict_pixels(mnistify(to_gray(image)), "upload")

    def predict_sample(self, index: int | None = None) -> int | None:
        if index is not None:
            self.sample_index = index
        if self.dataset not in DATASETS and self.param_id:
            return self._predict_registered_sample()
        raw = self._raw_test()
        i = min(self.sample_index, len(raw.y_test) - 1)
        pixels = raw.x_test[i].numpy().astype(np.float32) / 255.0
        self.source = f"test sample #{i} (true label {int(raw.y_test[i])})"
        return self.predict_pixels(pixels, self.source)

    def _test_data(self) -> dict[str, Any]:
        """The selected run's test set as the model takes it, with its classes."""
        run_id = self._runs[self.param_id or ""]
        key = f"test:{self.dataset}" if self.dataset in DATASETS else f"test:{run_id}"
        if key not in self._test:
            self._test[key] = self.state.service.run_test_data(run_id)
        return self._test[key]

    def _predict_registered_sample(self) -> int | None:
        data = self._test_data()
        i = min(self.sample_index, len(data["y"]) - 1)
        self.source = f"test sample #{i} (true class {self.classes[int(data['y'][i])]})"
        return self._show_prediction(data["x"][i:i + 1])

    def _raw_test(self) -> Any:
        key = f"raw:{self.dataset}"
        if key not in self._test:
            self._test[key] = load_raw(self.dataset, progress=False)
        return self._test[key]

    def _on_drawing(self, event: param.parameterized.Event) -> None:
        self._guard(self.predict_drawing, event.new)

    def _on_upload(self, event: param.parameterized.Event) -> None:
        if event.new:
            self._guard(self.predict_upload, event.new)

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # shown to the user rather than lost in the server log
            self.message = f"{type(exc).__name__}: {exc}"
            return None

    def confusion_matrix(self) -> np.ndarray | None:
        """Predict the whole test set with the chosen parameters and draw the matrix."""
        if not self.param_id:
            self.message = "No trained parameter set selected."
            return None
        data = self._test_data()  # the model's own dataset's test set
        x, y = data["x"], data["y"]
        predicted = np.concatenate([
            np.asarray(self.state.service.infer(self.param_id, x[i:i + INFER_BATCH],
                                                probabilities=False, labels=True)
                       ["outputs"]["labels"]) for i in range(0, len(x), INFER_BATCH)])
        classes = self.classes
        m = confusion(y, predicted, len(classes))
        accuracy = float(np.trace(m) / max(m.sum(), 1))
        fig = go.Figure(go.Heatmap(z=m, x=list(classes), y=list(classes), colorscale="Blues",
                                   text=m, texttemplate="%{text}", showscale=False))
        fig.update_layout(
            title=dict(text=f"Confusion matrix on {len(y):,} test images · accuracy "
                       f"{accuracy:.3f}", x=0.02, font=dict(size=14)),
            xaxis=dict(title="predicted", type="category"),
            yaxis=dict(title="true", type="category", autorange="reversed"),
            template="plotly_white", height=460, margin=dict(l=60, r=20, t=40, b=50))
        self._confusion.object = fig
        return m

    # ---- view -----------------------------------------------------------------------------------
    def _prob_figure(self, probs: list[float]) -> go.Figure:
        classes = self.classes
        colors = ["#2563eb" if probs and i == int(np.argmax(probs)) else "#cbd5e1"
                  for i in range(len(classes))]
        fig = go.Figure(go.Bar(x=classes, y=probs or [0] * len(classes), marker_color=colors))
        fig.update_layout(title=dict(text="Class probabilities", x=0.02, font=dict(size=14)),
                          yaxis=dict(range=[0, 1]), xaxis=dict(type="category"),
                          template="plotly_white", height=260,
                          margin=dict(l=40, r=10, t=40, b=30))
        return fig

    @param.depends("prediction", "latency_ms", "source", "message")
    def _result(self) -> pn.viewable.Viewable:
        if self.message:
            return pn.pane.Alert(escape_markdown(self.message), alert_type="warning",
                                 css_classes=["playground-message"])
        if self.prediction is None:
            return html("<div class='wb-empty'>Draw a digit, upload an image or pick a "
                                "test sample.</div>")
        name = self.classes[self.prediction]
        confidence = max(self.probabilities) if self.probabilities else 0.0
        return html(
            f"<div class='wb-prediction'><div class='k'>prediction</div>"
            f"<div class='big prediction-label'>{escape_html(name)}</div>"
            f"<div class='k'>{confidence:.1%} confident · {self.latency_ms:.1f} ms · "
            f"{escape_html(self.source)}</div></div>")

    def __panel__(self) -> pn.viewable.Viewable:
        w = pn.widgets
        clear = w.Button(label="Clear", width=80, css_classes=["clear-canvas"])
        clear.on_click(lambda _: self.canvas.clear())
        sample = w.IntInput.from_param(self.param.sample_index, label="Test sample #", width=120)
        pick = w.Button(label="Predict sample", width=130, margin=(24, 4))
        pick.on_click(lambda _: self._guard(self.predict_sample))
        random_pick = w.Button(label="Random", width=80, margin=(24, 4))
        random_pick.on_click(lambda _: self._guard(
            self.predict_sample, int(np.random.default_rng().integers(0, 1000))))
        cm = w.Button(label="Confusion matrix on test set", color="primary",
                      css_classes=["confusion-button"])
        cm.on_click(lambda _: self._guard(self.confusion_matrix))
        chooser = w.Select.from_param(self.param.param_id, label="Parameter set",
                                      sizing_mode="stretch_width", css_classes=["param-set"])
        return pn.Column(
            chooser,
            export_buttons(self.state.service, lambda: self.param_id),
            pn.Row(
                pn.Column(html("<h3 class='wb-h'>Draw</h3>"), self.canvas,
                          pn.Row(clear, self._upload)),
                pn.Column(html("<h3 class='wb-h'>Model input (28×28)</h3>"),
                          self._preview, pn.Row(sample, pick, random_pick)),
                pn.Column(self._result, self._probs, sizing_mode="stretch_width"),
                sizing_mode="stretch_width",
            ),
            cm, self._confusion,
            sizing_mode="stretch_width",
        )
