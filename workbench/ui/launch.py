"""Launch panel: hyperparameters, data set and compute target, then start a run.

The form's fields map one to one onto ``workbench.spec.Hyperparams``; validation and its
messages come from there (and from the service), never from a second set of rules here.
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param
from panel.viewable import Viewer
from pydantic import ValidationError

from ..data.datasets import DATASETS
from ..spec import Hyperparams, error_messages
from .state import AppState
from .theme import escape_html, escape_markdown, html


def _describe_error(exc: Exception) -> str:
    return "; ".join(error_messages(exc))


class LaunchPanel(Viewer):
    """Hyperparameters form + Launch button; sets ``state.run_id`` to the new run."""

    state = param.ClassSelector(class_=AppState)
    optimizer = param.Selector(default="adam", objects=["sgd", "adam", "adamw"])
    lr = param.Number(default=1e-3, bounds=(1e-6, 10.0), doc="learning rate")
    momentum = param.Number(default=0.0, bounds=(0.0, 0.99), doc="SGD momentum")
    batch_size = param.Integer(default=64, bounds=(1, 65536))
    epochs = param.Integer(default=5, bounds=(1, 1000))
    seed = param.Integer(default=42, bounds=(0, None))
    train_split = param.Number(default=0.9, bounds=(0.05, 1.0), doc="share used for training")
    early_stopping = param.Integer(default=0, bounds=(0, 1000),
                                   doc="patience in epochs; 0 = off")
    limit = param.Integer(default=0, bounds=(0, None), doc="cap on training samples; 0 = all")
    target = param.Selector(default="local", objects=["local"], doc="where the run executes")
    run_name = param.String(default="", doc="model name (optional)")
    message = param.String(default="", doc="last launch error, empty when fine")
    launched = param.Event(doc="fires after a run was started")

    def __init__(self, state: AppState, **params: Any):
        super().__init__(state=state, **params)
        self._refresh_targets()
        self._estimate()
        self._own_run: str | None = None  # the run this panel launched last
        self.state.param.watch(lambda e: self._on_run(e.new), "run_id")

    def _on_run(self, run_id: str | None) -> None:
        """A past run opened (from the Runs tab, or a shared link): the form takes its
        hyperparameters, so "launch" repeats it unless edited."""
        if not run_id or run_id == self._own_run or self.state.service is None:
            return
        try:
            run = self.state.service.get_run(run_id)
        except (KeyError, ValueError):
            return
        self.load_hyperparams(run.hyperparams)

    def load_hyperparams(self, hp: dict[str, Any]) -> None:
        """Set the form from a Hyperparams JSON (fields it lacks keep their values)."""
        opt = hp.get("optimizer") or {}
        values: dict[str, Any] = {
            "epochs": hp.get("epochs"), "batch_size": hp.get("batch_size"),
            "seed": hp.get("seed"), "train_split": hp.get("train_split"),
            "optimizer": opt.get("type"), "lr": opt.get("lr"), "momentum": opt.get("momentum"),
            "early_stopping": hp.get("early_stopping_patience") or 0,
        }
        self.param.update({k: v for k, v in values.items() if v is not None})

    def _refresh_targets(self) -> None:
        targets = list(getattr(self.state.service, "targets", None) or ["local"])
        self.param.target.objects = targets
        if self.target not in targets:
            self.target = targets[0]

    def hyperparams(self) -> dict[str, Any]:
        """The form as a validated Hyperparams JSON (raises ``ValidationError``)."""
        opt: dict[str, Any] = {"type": self.optimizer, "lr": self.lr}
        if self.optimizer == "sgd":
            opt["momentum"] = self.momentum
        data: dict[str, Any] = {
            "epochs": self.epochs, "batch_size": self.batch_size, "optimizer": opt,
            "seed": self.seed, "train_split": self.train_split,
        }
        if self.early_stopping:
            data["early_stopping_patience"] = self.early_stopping
        return Hyperparams.model_validate(data).to_json()

    @param.depends("train_split", "limit", "state.dataset", watch=True)
    def _estimate(self) -> None:
        full, source = self.state.full_train_samples()
        n = round((full or DATASETS["mnist"].train_size) * self.train_split)
        self.state.param.update(samples_source=source,
                                train_samples=max(1, min(n, self.limit) if self.limit else n))

    def launch(self) -> str | None:
        """Create the model and start a run; returns its id (None with ``message`` set)."""
        service = self.state.service
        architecture = self.state.launch_architecture()  # the MLP or the network builder's
        if architecture is None:
            self.message = "The architecture is not valid yet: fix it in the Build tab."
            return None
        try:
            hp = self.hyperparams()
            model = service.create_model(architecture, hp, name=self.run_name or None)
            run = service.start_run(
                model.model_id, dataset=self.state.dataset, target=self.target,
                device=self.state.device, limit=self.limit or None,
            )
        except ValidationError as exc:
            self.message = _describe_error(exc)
            return None
        except (ValueError, KeyError, RuntimeError) as exc:
            self.message = str(exc)
            return None
        self.message = ""
        self._own_run = run.run_id
        self.state.run_id = run.run_id
        self.state.param.trigger("runs_changed")
        self.param.trigger("launched")
        return run.run_id

    @param.depends("state.dataset")
    def _dataset_view(self) -> pn.viewable.Viewable:
        """The chosen dataset's sample shape and classes (cnn20b, issue 20)."""
        try:
            info = self.state.dataset_info()
        except (KeyError, ValueError) as exc:
            return html(f"<div class='wb-err'>{escape_html(exc)}</div>")
        classes = info.get("classes") or []
        shown = ", ".join(map(str, classes[:10])) + (" …" if len(classes) > 10 else "")
        shape = "[" + ", ".join(map(str, info.get("input_shape") or [])) + "]"
        return html(f"<div class='wb-io dataset-info'>samples {escape_html(shape)} · "
                    f"{len(classes)} classes: {escape_html(shown)}</div>", margin=(0, 10))

    @param.depends("message")
    def _message_view(self) -> pn.viewable.Viewable:
        return pn.pane.Alert(escape_markdown(self.message), alert_type="danger",
                             visible=bool(self.message),
                             css_classes=["wb-launch-error"], sizing_mode="stretch_width")

    @param.depends("optimizer")
    def _momentum(self) -> pn.viewable.Viewable:
        return pn.widgets.FloatInput.from_param(
            self.param.momentum, label="Momentum", step=0.05, width=130,
            disabled=self.optimizer != "sgd")

    def __panel__(self) -> pn.viewable.Viewable:
        p = self.param
        w = pn.widgets
        button = w.Button(label="▶ Launch training", color="success", height=44,
                          sizing_mode="stretch_width", css_classes=["launch-run"])
        button.on_click(lambda _: self.launch())
        self.state.refresh_datasets()
        dataset = w.Select.from_param(
            self.state.param.dataset, label="Dataset", width=200, css_classes=["hp-dataset"],
            options={(DATASETS[k].title if k in DATASETS else k): k
                     for k in self.state.param.dataset.objects})
        device = w.Select.from_param(self.state.param.device, label="Device", width=130)
        return pn.Column(
            html("<h3 class='wb-h'>Optimizer</h3>"),
            pn.Row(w.Select.from_param(p.optimizer, label="Optimizer", width=130),
                   w.FloatInput.from_param(p.lr, label="Learning rate", step=1e-4, width=130,
                                           format="0.[000000]"),
                   self._momentum),
            html("<h3 class='wb-h'>Schedule</h3>"),
            pn.Row(w.IntInput.from_param(p.epochs, label="Epochs", width=100,
                                         css_classes=["hp-epochs"]),
                   w.IntInput.from_param(p.batch_size, label="Batch size", width=110,
                                         css_classes=["hp-batch"]),
                   w.IntInput.from_param(p.seed, label="Seed", width=100),
                   w.IntInput.from_param(p.early_stopping, label="Early stop patience",
                                         width=150)),
            html("<h3 class='wb-h'>Data</h3>"),
            pn.Row(dataset,
                   w.FloatSlider.from_param(p.train_split, label="Train split", step=0.05,
                                            width=140),
                   w.IntInput.from_param(p.limit, label="Sample cap (0 = all)", width=140,
                                         css_classes=["hp-limit"])),
            self._dataset_view,
            html("<h3 class='wb-h'>Compute</h3>"),
            pn.Row(w.Select.from_param(p.target, label="Target", width=160), device,
                   w.TextInput.from_param(p.run_name, label="Model name", width=200,
                                          placeholder="optional")),
            self._message_view,
            button,
            sizing_mode="stretch_width",
        )
