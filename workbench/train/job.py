"""A run spec: everything needed to execute one training run, as JSON.

This is the unit every executor ships (to a subprocess, a Jupyter kernel, a remote node), so it
holds plain JSON-able values and ``execute`` needs only the core (torch, numpy, pydantic).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import events as ev
from ..spec import Hyperparams, Network, validate_network
from .engine import TrainOptions, TrainResult, train


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    architecture: dict[str, Any]
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    dataset: str = "mnist"
    device: str = "auto"
    cuda_graph: bool = True
    allow_dropout: bool = False  # Cortex-form architectures may carry dropout layers
    limit: int | None = Field(default=None, ge=1, description="cap on training samples")
    offline: bool | None = None
    initial_weights_b64: str | None = None  # safetensors, for fine-tuning
    freeze: list[int] = Field(default_factory=list, description="spec indices of frozen layers")
    data_url: str | None = None  # fine-tuning data (file:// or http(s):// IDX or .npz)
    # a registered dataset (workbench.data.tables): its prepared .npz and class count
    dataset_file: str | None = None
    num_classes: int = Field(default=10, ge=2, le=65536)
    # Distributed runs (target "distributed", workbench.executors.distributed): how ranks split
    # the work, how many, and optionally which `workbench worker`s ("host:port") hold them.
    strategy: Literal["single", "ddp", "pipeline"] = "single"
    world_size: int = Field(default=1, ge=1, le=64)
    workers: list[str] = Field(default_factory=list, max_length=64)
    # Checkpoints (workbench.train.checkpoint): a checkpoint every N epochs (0: only on pause),
    # and the one a resumed run continues from (safetensors + its JSON state).
    checkpoint_every: int = Field(default=0, ge=0, le=100_000)
    resume_checkpoint_b64: str | None = None
    resume_state: dict[str, Any] | None = None

    def parsed(self) -> tuple[Network, Hyperparams]:
        arch = validate_network(self.architecture, allow_dropout=self.allow_dropout,
                                num_classes=self.num_classes)
        return arch, Hyperparams.model_validate(self.hyperparams)


def set_training_threads() -> None:
    """The one thread policy of processes that train runs (the local worker, a kernel): every
    core but one, left to whoever reads the events. CPU results depend on it (a reduction split
    over another number of threads sums in another order), so a run resumed on another target
    reproduces an uninterrupted one only when both train this way."""
    import os

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))


def execute(
    spec: RunSpec | dict[str, Any],
    *,
    sink: ev.Sink | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
    should_pause: Callable[[], bool] | None = None,
) -> TrainResult:
    """Load the data and train. Failures (bad data, bad spec) become ``run.failed`` events."""
    sink = sink or ev.null_sink
    try:
        spec = RunSpec.model_validate(spec)
        if spec.strategy != "single":
            raise ValueError(f"strategy {spec.strategy!r} runs on the 'distributed' target, "
                             "not in a single process")
        arch, hp = spec.parsed()
        splits = load_run_data(spec, hp, progress=progress)
        initial = None
        if spec.initial_weights_b64:
            from ..model import from_safetensors

            initial = from_safetensors(base64.b64decode(spec.initial_weights_b64))
        resume = None
        if spec.resume_checkpoint_b64:
            from .checkpoint import Checkpoint

            resume = Checkpoint.from_blob(base64.b64decode(spec.resume_checkpoint_b64),
                                          spec.resume_state or {})
    except Exception as exc:
        run_id = spec.run_id if isinstance(spec, RunSpec) else str(spec.get("run_id", "?"))
        sink(ev.make_event(ev.RUN_FAILED, run_id, error=f"{type(exc).__name__}: {exc}"))
        raise
    options = TrainOptions(
        device=spec.device,
        cuda_graph=spec.cuda_graph,
        initial_weights=initial,
        freeze=tuple(spec.freeze),
        checkpoint_every=spec.checkpoint_every,
        resume_from=resume,
    )
    gated = _TestEvaluation(_with_system_metrics(sink), splits, batch_size=hp.batch_size)
    result = train(arch, hp, splits, run_id=spec.run_id, sink=gated, should_stop=should_stop,
                   options=options, should_pause=should_pause)
    gated.finish(result)
    return result


def _with_system_metrics(sink: ev.Sink) -> ev.Sink:
    """``sink`` with this process's system metrics (CPU %, RSS, GPU memory; the same
    ``system/*`` names a tracked run logs) added to every epoch event: the store keeps every
    number of an epoch as a metric."""
    from ..system_metrics import SystemSampler

    sampler = SystemSampler()

    def send(event: ev.Event) -> None:
        if event["type"] == ev.EPOCH:
            event = {**event, "data": {**sampler.sample(), **event["data"]}}
        sink(event)

    return send


class _TestEvaluation:
    """Holds back ``run.completed`` until the trained model is scored on the test split, so a
    run's record carries ``test_loss``/``test_accuracy`` whichever executor trained it (an
    ``evaluation`` event just before the completion). Also labels ``run.started`` with where
    the data came from (a download, the cache, the bundled subset)."""

    def __init__(self, sink: ev.Sink, splits: Any, *, batch_size: int):
        self.sink, self.splits, self.batch_size = sink, splits, batch_size
        self.completed: ev.Event | None = None

    def __call__(self, event: ev.Event) -> None:
        if event["type"] == ev.RUN_STARTED:
            event = {**event, "data": {**event["data"],
                                       "dataset_source": getattr(self.splits, "source", None),
                                       "batch_size": self.batch_size,
                                       "n_test": _count(getattr(self.splits, "y_test", None))}}
        if event["type"] == ev.RUN_COMPLETED:
            self.completed = event
            return
        self.sink(event)

    def finish(self, result: TrainResult) -> None:
        if self.completed is None:
            return
        completed, self.completed = self.completed, None
        evaluation = score_on_test_split(result.model, self.splits, completed["run_id"],
                                         epoch=completed["data"]["epochs_run"])
        if evaluation is not None:
            self.sink(evaluation)
        self.sink(completed)


def score_on_test_split(model: Any, splits: Any, run_id: str, *,
                        epoch: int) -> ev.Event | None:
    """The ``evaluation`` event of a trained ``model`` on the test split (None without one):
    every strategy sends it just before ``run.completed`` (the engine's runs, DDP's rank 0)."""
    x, y = getattr(splits, "x_test", None), getattr(splits, "y_test", None)
    if x is None or y is None or len(y) == 0:
        return None
    from .engine import evaluate

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct = evaluate(model, x.to(device), y.to(device))
    model.train(was_training)
    n = int(y.shape[0])
    return ev.make_event(ev.EVALUATION, run_id, epoch=epoch, split="test",
                         test_loss=float(loss_sum.item()) / n,
                         test_accuracy=int(correct.item()) / n, n_test=n)


def _count(y: Any) -> int | None:
    return None if y is None else int(len(y))


def load_run_data(spec: RunSpec, hp: Hyperparams, *, progress: bool = False):
    from ..data import load_splits

    if spec.dataset_file:
        from pathlib import Path

        from ..data.tables import load_prepared_splits

        return load_prepared_splits(Path(spec.dataset_file), name=spec.dataset,
                                    num_classes=spec.num_classes, train_split=hp.train_split,
                                    seed=hp.seed, limit=spec.limit)
    if spec.data_url:
        from ..data import load_url_splits

        return load_url_splits(spec.data_url, train_split=hp.train_split, seed=hp.seed)
    return load_splits(
        spec.dataset,
        train_split=hp.train_split,
        seed=hp.seed,
        offline=spec.offline,
        progress=progress,
        limit=spec.limit,
    )
