"""``Workbench``: create models, run training, read results."""

from __future__ import annotations

import threading
from typing import Any

from .. import events as ev
from ..spec import Hyperparams, validate_architecture
from ..store import ModelRecord, RunRecord, Store
from ..train import TrainResult
from ..train.job import RunSpec, execute


class Workbench:
    def __init__(self, store: Store):
        self.store = store

    # ---- models ----------------------------------------------------------------------------
    def create_model(
        self, architecture: dict[str, Any], hyperparams: dict[str, Any] | None = None,
        *, name: str | None = None, allow_dropout: bool = False,
    ) -> ModelRecord:
        """Validate and store a model definition (raises pydantic ``ValidationError``)."""
        arch = validate_architecture(architecture, allow_dropout=allow_dropout)
        hp = Hyperparams.model_validate(hyperparams or {})
        return self.store.create_model(
            architecture=arch.to_json(), hyperparams=hp.to_json(), name=name
        )

    # ---- runs --------------------------------------------------------------------------------
    def create_run(
        self, model_id: str, *, hyperparams: dict[str, Any] | None = None,
        dataset: str = "mnist", target: str = "local",
    ) -> tuple[RunRecord, Hyperparams]:
        model = self.store.get_model(model_id)
        if model is None:
            raise KeyError(model_id)
        hp = Hyperparams.model_validate({**model.hyperparams, **(hyperparams or {})})
        run = self.store.create_run(
            model_id=model_id, hyperparams=hp.to_json(), epochs_total=hp.epochs,
            dataset=dataset, target=target,
        )
        return run, hp

    def run_spec(self, run: RunRecord, **overrides: Any) -> RunSpec:
        model = self.store.get_model(run.model_id)
        assert model is not None
        return RunSpec(
            run_id=run.run_id, architecture=model.architecture, hyperparams=run.hyperparams,
            dataset=run.dataset, **overrides,
        )

    def train_inline(
        self, run: RunRecord, *, sink: ev.Sink | None = None,
        stop: threading.Event | None = None, progress: bool = False, **spec_overrides: Any,
    ) -> TrainResult:
        """Train in this process, persisting every event as it happens."""
        spec = self.run_spec(run, **spec_overrides)
        return execute(
            spec, sink=ev.fan_out(self.store.apply_event, sink),
            should_stop=stop.is_set if stop else None, progress=progress,
        )
