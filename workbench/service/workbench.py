"""``Workbench``: create models, run training on executors, watch runs, read results, infer.

The one facade the REST API, the Panel app, the notebook helpers and the CLI call. It owns the
write path: every training event goes ``store.apply_event`` -> run cache invalidation ->
``bus.publish``, so whoever holds a ``Workbench`` sees consistent state and live events.

Runs are queued and dispatched to the executor of their target, at most ``max_workers`` at
once. A queued run's dispatch options are logged as a ``run.queued`` event, so a restarted
server can re-dispatch runs that never started (``resume_queued``).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
from pydantic import ValidationError

from .. import events as ev
from ..config import get_settings
from ..executors.base import Executor, RunHandle
from ..netspec import NetSpec
from ..spec import (
    Architecture,
    Hyperparams,
    Network,
    Parameters,
    SubmitError,
    check_model_limits,
    validate_architecture,
    validate_network,
)
from ..store import TERMINAL_STATES, ModelRecord, ParamRecord, RunRecord, RunsTable, Store
from ..train import TrainResult
from ..train.job import RunSpec, execute
from . import checkpoints, compare, projection
from .bus import EventBus
from .errors import Conflict, InvalidInput, NotFound, QueueFull
from .inference import ModelCache, build_loaded, check_inputs, forward, loaded_from_blob

log = logging.getLogger(__name__)

RUN_QUEUED = "run.queued"  # logged only: the dispatch options, for re-dispatch on restart
_RUN_CACHE_MAX = 4096


def override_conflict(hp: Hyperparams) -> str | None:
    """Why a training override, merged with the model's stored hyperparameters, cannot train
    as asked (None if it can): early stopping (``early_stopping_patience``) with no validation
    data to watch (``train_split`` 1.0), or a patience of at least the run's ``epochs`` (it
    could never stop early)."""
    patience = hp.early_stopping_patience
    if patience is None:
        return None
    if hp.train_split >= 1.0:
        return (f"early_stopping_patience ({patience}) needs validation data, but train_split "
                "is 1.0 (nothing held out)")
    if patience >= hp.epochs:
        return (f"early_stopping_patience ({patience}) is not below epochs ({hp.epochs}): "
                "early stopping could never stop the run")
    return None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Override one level deep (``{"optimizer": {"lr": 0.01}}`` keeps the optimizer type)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


class Workbench:
    def __init__(self, store: Store, *, max_workers: int | None = None):
        self.store = store
        self.bus = EventBus()
        self.max_workers = max_workers or get_settings().workers
        self._executors: dict[str, Executor] = {}
        self._lock = threading.RLock()
        self._pending: deque[tuple[str, str, RunSpec]] = deque()  # (run_id, target, spec)
        self._admitting = 0  # submissions past the queue check, not yet in _pending
        self._active: dict[str, RunHandle] = {}
        self._ended: set[str] = set()  # terminal before submit() returned
        self._closed = False
        # The server alone writes runs, so a cache invalidated on each event is exact.
        self._runs: dict[str, RunRecord] = {}
        self._run_gen: dict[str, int] = {}
        self._runs_lock = threading.Lock()
        self._models = ModelCache()
        self._sweeps: Any = None  # workbench.sweeps.manager.Sweeps, made on first use

    # ---- sweeps (workbench.sweeps): Optuna searches whose trials are runs of this service --
    @property
    def sweeps(self) -> Any:
        """The ``Sweeps`` facade (create, list, get, cancel); studies under ``<home>/sweeps``."""
        with self._lock:
            if self._sweeps is None:
                from pathlib import Path

                from ..store.connection import MEMORY
                from ..sweeps.manager import Sweeps

                home = get_settings().home if str(self.store.path) == MEMORY \
                    else Path(self.store.path).parent
                self._sweeps = Sweeps(self, home / "sweeps")
            return self._sweeps

    # ---- executors -------------------------------------------------------------------------
    def register_executor(self, target: str, executor: Executor) -> None:
        with self._lock:
            self._executors[target] = executor

    def _executor(self, target: str) -> Executor | None:
        with self._lock:
            if target not in self._executors and target == "local":
                from ..executors.local import LocalExecutor

                self._executors["local"] = LocalExecutor()  # the default, made on first use
            return self._executors.get(target)

    @property
    def targets(self) -> list[str]:
        with self._lock:
            return sorted({"local", *self._executors})

    # ---- models ----------------------------------------------------------------------------
    def create_model(
        self, architecture: dict[str, Any], hyperparams: dict[str, Any] | None = None,
        *, name: str | None = None, allow_dropout: bool = False,
    ) -> ModelRecord:
        """Validate and store a model definition (raises pydantic ``ValidationError``, or
        ``SubmitError`` for a network over ``settings.limits``)."""
        arch = validate_network(architecture, allow_dropout=allow_dropout, num_classes=None)
        hp = Hyperparams.model_validate(hyperparams or {})
        check_model_limits(arch, batch_size=hp.batch_size)
        return self.store.create_model(
            architecture=arch.to_json(), hyperparams=hp.to_json(), name=name
        )

    def get_model(self, model_id: str) -> ModelRecord:
        model = self.store.get_model(model_id)
        if model is None:
            raise NotFound("model", model_id)
        return model

    def list_models(self, *, limit: int = 100, offset: int = 0) -> list[ModelRecord]:
        return self.store.list_models(limit=limit, offset=offset)

    # ---- runs --------------------------------------------------------------------------------
    def resolve_hyperparams(self, model: ModelRecord, override: dict[str, Any] | None) -> Hyperparams:
        """The model's hyperparameters with ``override`` applied.

        An override that is invalid by itself raises ``ValidationError``; one that is valid but
        contradicts the model's stored hyperparameters raises ``Conflict`` (409): ``epochs``
        above the model's ``max_epochs``, and the cases of ``override_conflict``.
        """
        if not override:
            return Hyperparams.model_validate(model.hyperparams)
        Hyperparams.model_validate(override)
        try:
            merged = Hyperparams.model_validate(_merge(model.hyperparams, override))
        except ValidationError as exc:
            from ..spec import error_messages

            raise Conflict(
                "hyperparams: the override is inconsistent with the model's hyperparameters: "
                + "; ".join(error_messages(exc))
            ) from None
        if why := override_conflict(merged):
            raise Conflict("hyperparams: the override is inconsistent with the model's "
                           f"hyperparameters: {why}")
        return merged

    def create_run(
        self, model_id: str, *, hyperparams: dict[str, Any] | None = None,
        dataset: str = "mnist", target: str = "local",
    ) -> tuple[RunRecord, Hyperparams]:
        """Store a run of ``model_id`` (not queued) after the size and data checks
        (``SubmitError``)."""
        model = self.get_model(model_id)
        hp = self.resolve_hyperparams(model, hyperparams)
        arch = validate_network(model.architecture, allow_dropout=True, num_classes=None)
        check_model_limits(arch, batch_size=hp.batch_size)
        self._check_data(arch, dataset, None)
        return self._store_run(model_id, hp, dataset, target), hp

    def _dataset_overrides(self, architecture: Network, dataset: str,
                           overrides: dict[str, Any] | None) -> dict[str, Any] | None:
        """A run of a registered dataset (or a bundled table) is told its prepared file and
        class count; its shape must fit the network (``SubmitError``)."""
        from ..data import DATASETS
        from . import datasets as registry

        if dataset in DATASETS or (overrides or {}).get("data_url"):
            return overrides
        record = registry.resolve(self.store, dataset)
        if record is None:
            return overrides  # an alias of a built-in, or unknown: _check_data says which
        features = int(np.prod(record.input_shape))
        if features != architecture.input_size:
            raise SubmitError("dataset", f"{record.name} has {record.input_shape} "
                              f"({features} values) per sample but the model takes "
                              f"{architecture.input_size}")
        if architecture.output_size != len(record.classes):
            raise SubmitError("architecture", f"the network outputs {architecture.output_size} "
                              f"classes but {record.name} has {len(record.classes)}")
        return {**(overrides or {}), "dataset_file": record.file,
                "num_classes": len(record.classes)}

    # ---- datasets ------------------------------------------------------------------------------
    def list_datasets(self) -> list[dict[str, Any]]:
        from . import datasets as registry

        return registry.catalogue(self.store)

    def get_dataset(self, id_or_name: str) -> dict[str, Any]:
        from . import datasets as registry

        record = registry.resolve(self.store, id_or_name)
        if record is None:
            raise NotFound("dataset", id_or_name)
        return registry.view(record)

    def register_dataset(self, name: str, *, path: str | None = None,
                         upload: tuple[str, bytes] | None = None, query: str | None = None,
                         label: str = "label") -> dict[str, Any]:
        """Register a file or image folder by path (inside the data roots), an uploaded file
        or a read-only DuckDB ``query`` over registered CSV/Parquet datasets; ``SubmitError``
        naming the field for anything refused."""
        from pathlib import Path

        from . import datasets as registry

        if query is not None and (path or upload is not None):
            raise SubmitError("query", "give either a path or a query, not both")
        if query is not None:
            record = registry.register_query(self.store, name, query, label=label)
        elif upload is not None:
            record = registry.register_upload(self.store, name, *upload, label=label)
        elif path:
            record = registry.register(self.store, name, Path(path).expanduser(), label=label)
        else:
            raise SubmitError("path", "give a path (or upload a file)")
        return registry.view(record)

    def run_test_data(self, run_id: str) -> dict[str, Any]:
        """The test set ``run_id`` was scored on, with its class names (the playground's
        confusion matrix; cnn20b)."""
        from . import datasets as registry

        run = self.get_run(run_id)
        return registry.test_split(self.store, run.dataset, run.hyperparams)

    def _store_run(self, model_id: str, hp: Hyperparams, dataset: str, target: str, *,
                   name: str | None = None, experiment: str | None = None,
                   tags: list[str] | None = None) -> RunRecord:
        from ..data import canonical_name

        try:
            dataset = canonical_name(dataset)
        except ValueError:  # a registered dataset: its name, also when given by id
            record = self.store.get_dataset(dataset)
            dataset = record.name if record is not None else dataset

        return self.store.create_run(
            model_id=model_id, hyperparams=hp.to_json(), epochs_total=hp.epochs,
            dataset=dataset, target=target, name=name, experiment=experiment,
            tags=tags or (),
        )

    # ---- admission: every check a run passes before anything is stored -----------------------
    def check_submission(
        self, architecture: Network, hyperparams: Hyperparams, *, dataset: str = "mnist",
        target: str = "local", device: str = "auto",
        spec_overrides: dict[str, Any] | None = None,
    ) -> None:
        """Raise ``SubmitError`` (or ``QueueFull``) for a run that this server would store only
        to fail later: a network or batch over ``settings.limits``, data whose feature count is
        not the model's ``input_size`` (a built-in dataset, or the data at ``data_url``, which
        must be allowed by ``workbench.outbound``), more local ranks than the machine runs, a
        CUDA device the target lacks, a full queue. Faces that create a model for the run
        (Cortex jobs) call it before creating the model; ``start_run`` calls it too."""
        overrides = spec_overrides or {}
        check_model_limits(architecture, batch_size=hyperparams.batch_size)
        if isinstance(architecture, NetSpec) and overrides.get("strategy", "single") != "single":
            raise SubmitError("strategy", "ddp and pipeline runs take MLPs (input_size form) "
                              "only; train a native-spec network with strategy 'single'")
        self._check_placement(target, overrides)
        self._check_device(device, target, overrides)
        if "dataset_file" not in overrides:  # a registered dataset: _dataset_overrides checked
            self._check_data(architecture, dataset, overrides.get("data_url"))
        with self._lock:
            self._check_queue()

    def check_queue(self) -> None:
        """``QueueFull`` when ``limits.max_queued_runs`` runs are already waiting."""
        with self._lock:
            self._check_queue()

    def _check_queue(self) -> None:
        limit = get_settings().limits.max_queued_runs
        queued = len(self._pending) + self._admitting
        if queued >= limit:
            raise QueueFull(queued, limit)

    @contextlib.contextmanager
    def _admission(self) -> Iterator[None]:
        """A queue slot held while a run is stored and enqueued (QueueFull when none is left)."""
        with self._lock:
            self._check_queue()
            self._admitting += 1
        try:
            yield
        finally:
            with self._lock:
                self._admitting -= 1

    @staticmethod
    def _check_placement(target: str, overrides: dict[str, Any]) -> None:
        from ..executors.distributed import DEFAULT_WORLD_SIZE, DISTRIBUTED
        from ..executors.targets import TargetError, check_available, check_local_world_size

        try:
            check_available(target)
        except TargetError as exc:
            raise SubmitError(exc.field, exc.message) from None
        if target != DISTRIBUTED or overrides.get("workers"):
            return  # workbench workers are machines of their own: one rank each
        size = overrides.get("world_size") or 1
        if overrides.get("strategy", "single") == "single":
            size = max(size, DEFAULT_WORLD_SIZE)  # what the distributed executor will run
        try:
            check_local_world_size(size)
        except TargetError as exc:
            raise SubmitError(exc.field, exc.message) from None

    def _check_device(self, device: str, target: str, overrides: dict[str, Any]) -> None:
        if not device.startswith("cuda"):
            return
        from ..executors.distributed import DISTRIBUTED
        from ..executors.registry import LOCAL, LOCAL_KERNEL

        if target in (LOCAL, LOCAL_KERNEL) or (target == DISTRIBUTED
                                                and not overrides.get("workers")):
            import torch

            if not torch.cuda.is_available():
                raise SubmitError("device", f"{device!r}: this server has no CUDA device "
                                  "(torch.cuda.is_available() is false); use 'auto' or 'cpu'")
            index = int(device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                raise SubmitError("device", f"{device!r}: this server has "
                                  f"{torch.cuda.device_count()} CUDA device(s)")
            return
        find = getattr(self.store, "get_node", None)
        node = find(target) if find is not None else None
        if node is not None and "cuda" not in (node.capabilities or []):
            raise SubmitError("device", f"{device!r}: node {target} has no CUDA device")

    @staticmethod
    def _check_data(architecture: Network, dataset: str, data_url: str | None) -> None:
        from ..data import DATASETS, canonical_name

        if data_url:
            from ..data.urls import DataUrlError, probe_url

            try:
                shape = probe_url(data_url)
            except DataUrlError as exc:
                raise SubmitError("data_url", str(exc)) from None
            if shape.samples < 1:
                raise SubmitError("data_url", "the data has no training samples")
            if shape.features != architecture.input_size:
                raise SubmitError("data_url", f"x_train has {shape.features} features per "
                                  f"sample but the model takes {architecture.input_size} "
                                  "(input_size)")
            return
        try:
            info = DATASETS[canonical_name(dataset)]
        except ValueError as exc:
            raise SubmitError("dataset", str(exc)) from None
        if architecture.output_size != len(info.classes):
            raise SubmitError("architecture", f"the network outputs {architecture.output_size} "
                              f"classes but {info.title} has {len(info.classes)}")
        if info.input_size != architecture.input_size:
            raise SubmitError("dataset", f"{info.title} has {info.input_size} features per "
                              f"sample but the model takes {architecture.input_size} "
                              "(input_size)")

    def run_spec(self, run: RunRecord, **overrides: Any) -> RunSpec:
        model = self.get_model(run.model_id)
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
            spec, sink=ev.fan_out(self.record_event, sink),
            should_stop=stop.is_set if stop else None, progress=progress,
        )

    def start_run(
        self, model_id: str, *, hyperparams: dict[str, Any] | None = None,
        dataset: str = "mnist", target: str = "local", device: str = "auto",
        limit: int | None = None, spec_overrides: dict[str, Any] | None = None,
        initial_param_id: str | None = None, name: str | None = None,
        experiment: str | None = None, tags: list[str] | None = None,
        checkpoint_every: int | None = None, auto_resume: bool | None = None,
    ) -> RunRecord:
        """Queue a run; it trains asynchronously on ``target``'s executor (``name``,
        ``experiment``, ``tags``: how it is organised; a readable name when none is given).

        ``spec_overrides`` are further JSON ``RunSpec`` fields (fine-tuning: freeze, data_url;
        allow_dropout for Cortex models); ``initial_param_id`` starts from a stored parameter
        set. Both are logged with the ``run.queued`` event, so ``resume_queued`` re-dispatches
        a run exactly as it was asked for after a server restart. ``checkpoint_every`` (epochs;
        default ``WORKBENCH_CHECKPOINT_EVERY``) and ``auto_resume`` (default
        ``WORKBENCH_AUTO_RESUME``): see :mod:`workbench.service.checkpoints`.
        """
        if self._executor(target) is None:
            raise ValueError(f"target: unknown target {target!r}; known: {', '.join(self.targets)}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit: must be a positive number of samples, got {limit}")
        if checkpoint_every is not None and checkpoint_every < 0:
            raise ValueError("checkpoint_every: a number of epochs >= 0 (0: only on pause), "
                             f"got {checkpoint_every}")
        if initial_param_id is not None:
            self.get_param_record(initial_param_id)  # NotFound before anything is queued
        model = self.get_model(model_id)
        hp = self.resolve_hyperparams(model, hyperparams)
        arch = validate_network(model.architecture, allow_dropout=True, num_classes=None)
        spec_overrides = self._dataset_overrides(arch, dataset, spec_overrides)
        self.check_submission(arch, hp, dataset=dataset, target=target, device=device,
                              spec_overrides=spec_overrides)
        with self._admission():
            run = self._store_run(model_id, hp, dataset, target, name=name,
                                  experiment=experiment, tags=tags)
            options = {"device": device, "limit": limit, "spec_overrides": spec_overrides or {},
                       "initial_param_id": initial_param_id,
                       "checkpoint_every": checkpoint_every, "auto_resume": auto_resume}
            self.record_event(ev.make_event(RUN_QUEUED, run.run_id, target=target, **options))
            self._enqueue(run.run_id, target, self._dispatch_spec(run, options))
        return self.get_run(run.run_id)

    def _dispatch_spec(self, run: RunRecord, options: dict[str, Any]) -> RunSpec:
        """The RunSpec of a queued run from its logged ``run.queued`` options."""
        overrides = dict(options.get("spec_overrides") or {})
        if options.get("initial_param_id"):
            blob = self.get_param_record(options["initial_param_id"]).safetensors
            overrides["initial_weights_b64"] = base64.b64encode(blob).decode("ascii")
        every = options.get("checkpoint_every")
        overrides["checkpoint_every"] = get_settings().checkpoint_every if every is None else every
        # A paused or interrupted run continues from its newest checkpoint (a run that never
        # checkpointed has none: it starts over).
        overrides.update(checkpoints.resume_fields(self.store, run.run_id))
        return self.run_spec(run, device=options.get("device") or "auto",
                             limit=options.get("limit"), **overrides)

    def _enqueue(self, run_id: str, target: str, spec: RunSpec) -> None:
        with self._lock:
            self._pending.append((run_id, target, spec))
        self._pump()

    def _pump(self) -> None:
        """Start pending runs while fewer than ``max_workers`` are active."""
        with self._lock:
            while not self._closed and self._pending and len(self._active) < self.max_workers:
                run_id, target, spec = self._pending.popleft()
                executor = self._executor(target)
                try:
                    if executor is None:
                        raise RuntimeError(f"target {target!r} is not registered")
                    handle = executor.submit(spec, self.record_event)
                except Exception as exc:
                    self.record_event(ev.make_event(
                        ev.RUN_FAILED, run_id, error=f"could not start on {target}: {exc}"))
                    continue
                if run_id in self._ended:
                    self._ended.discard(run_id)
                else:
                    self._active[run_id] = handle

    def record_event(self, event: ev.Event) -> None:
        """The write path for training events: store, invalidate the run cache, publish."""
        run_id = event.get("run_id")
        stored = True
        try:
            # The log id travels with the live event: a face that replays the log from its
            # last id and then follows live events sees each event exactly once.
            event = {**event, "id": self.store.apply_event(event)}
        except Exception:
            stored = False
            log.exception("could not store %s event of %s", event.get("type"), run_id)
        if isinstance(run_id, str):
            if stored:
                self._project(run_id, event)
            else:
                self._invalidate(run_id)
        self.bus.publish(event)
        if event.get("type") in ev.ENDS_EXECUTION and isinstance(run_id, str):
            with self._lock:
                if self._active.pop(run_id, None) is None:
                    self._ended.add(run_id)
            self._pump()

    def _project(self, run_id: str, event: ev.Event) -> None:
        """Apply a stored event to the cached record of its run (``projection``): status
        reads of a training run stay in memory instead of re-reading DuckDB per event."""
        with self._runs_lock:
            cached = self._runs.get(run_id)
            if cached is None:
                if event.get("type") == ev.STEP:
                    return  # nothing cached, and a step changes nothing a record shows
                self._run_gen[run_id] = self._run_gen.get(run_id, 0) + 1
                return
            after = projection.project(cached, event)
            if after is projection.UNCHANGED:
                return
            self._run_gen[run_id] = self._run_gen.get(run_id, 0) + 1
            if isinstance(after, RunRecord):
                self._runs[run_id] = after
            else:  # projection.DROP
                self._runs.pop(run_id, None)

    def _invalidate(self, run_id: str) -> None:
        """The run changed: drop its cached record (and any read racing with the change)."""
        with self._runs_lock:
            self._run_gen[run_id] = self._run_gen.get(run_id, 0) + 1
            self._runs.pop(run_id, None)

    def cached_run(self, run_id: str) -> RunRecord | None:
        """The run's in-memory record if there is one (never touches the store: an async
        handler may call this on the event loop, and ``get_run`` off it otherwise)."""
        with self._runs_lock:
            return self._runs.get(run_id)

    def get_run(self, run_id: str) -> RunRecord:
        with self._runs_lock:
            cached = self._runs.get(run_id)
            generation = self._run_gen.get(run_id, 0)
        if cached is not None:
            return cached
        run = self.store.get_run(run_id)
        if run is None:
            raise NotFound("run", run_id)
        with self._runs_lock:
            if self._run_gen.get(run_id, 0) == generation:  # no event landed meanwhile
                if len(self._runs) >= _RUN_CACHE_MAX:
                    self._runs.clear()
                self._runs[run_id] = run
        return run

    def list_runs(self, **filters: Any) -> tuple[list[RunRecord], str | None]:
        """A page of runs (``Store.list_runs`` filters: model_id, state, limit, cursor, ...)."""
        return self.store.list_runs(**filters)

    def active_run_count(self) -> int:
        """Runs queued or training in this process (an idle owner has none)."""
        with self._lock:
            return len(self._active) + len(self._pending)

    def cancel_run(self, run_id: str) -> RunRecord:
        run = self.get_run(run_id)
        if run.is_terminal:
            return run
        with self._lock:
            queued = [p for p in self._pending if p[0] == run_id]
            for item in queued:
                self._pending.remove(item)
            handle = self._active.get(run_id)
        if handle is not None and not queued:
            handle.cancel()
        else:  # never started here (queued, or orphaned by a missing executor)
            self.record_event(ev.make_event(ev.RUN_CANCELLED, run_id, epoch=run.epoch))
        return self.get_run(run_id)

    # ---- pause and resume (workbench.service.checkpoints) -----------------------------------
    def pause_run(self, run_id: str) -> RunRecord:
        """Pause a queued or running run: a running one checkpoints at the end of its current
        epoch and becomes ``paused`` (``Conflict`` for a finished run, or a target that cannot
        pause)."""
        return checkpoints.pause(self, run_id)

    def resume_run(self, run_id: str, *, target: str | None = None) -> RunRecord:
        """Queue a paused run again, on ``target`` (default: where it ran), from its last
        checkpoint; its epochs go on numbering (``Conflict`` for a run that is not paused)."""
        return checkpoints.resume(self, run_id, target=target)

    # ---- run bundles (workbench.service.bundles) ------------------------------------------------
    def export_bundle(self, run_id: str) -> bytes:
        """A finished run as one portable bundle file (zip)."""
        from . import bundles

        return bundles.export_bundle(self, run_id)

    def import_bundle(self, data: bytes) -> RunRecord:
        """Store a bundle's run in this home (``BundleError``, ``Conflict``)."""
        from . import bundles

        run = bundles.import_bundle(self, data)
        self._invalidate(run.run_id)
        return run

    def rerun_bundle(self, data: bytes, *, target: str = "local") -> tuple[str, RunRecord]:
        """Train a bundle's run again here: (original run id, the new queued run)."""
        from . import bundles

        return bundles.rerun(self, data, target=target)

    def _take_pending(self, run_id: str) -> bool:
        """Remove a run from the dispatch queue; True if it was there."""
        with self._lock:
            queued = [p for p in self._pending if p[0] == run_id]
            for item in queued:
                self._pending.remove(item)
        return bool(queued)

    def _active_handle(self, run_id: str) -> RunHandle | None:
        with self._lock:
            return self._active.get(run_id)

    # ---- organising and comparing runs ----------------------------------------------------
    def runs_table(self, **options: Any) -> RunsTable:
        """Rows of the runs table (``Store.runs_table``: columns, filter, sort, limit, offset,
        run_ids); ValueError / FilterError for a bad option."""
        return self.store.runs_table(**options)

    def update_run(self, run_id: str, *, name: str | None = None, experiment: str | None = None,
                   tags: list[str] | None = None, notes: str | None = None) -> RunRecord:
        """Rename a run, move it to an experiment, set its tags or notes (None: unchanged)."""
        self.get_run(run_id)  # NotFound
        self.store.update_run(run_id, name=name, experiment=experiment, tags=tags, notes=notes)
        self._invalidate(run_id)
        return self.get_run(run_id)

    def experiments(self) -> list[dict[str, Any]]:
        return self.store.experiments()

    def get_experiment(self, name: str) -> dict[str, Any]:
        found = self.store.get_experiment(name)
        if found is None:
            raise NotFound("experiment", name)
        return found

    def create_experiment(self, name: str, description: str = "") -> dict[str, Any]:
        """A new experiment record (``ExperimentExistsError``, a ValueError, if one exists)."""
        return self.store.create_experiment(name, description)

    def describe_experiment(self, name: str, description: str) -> dict[str, Any]:
        try:
            return self.store.describe_experiment(name, description)
        except KeyError:
            raise NotFound("experiment", name) from None

    def tags(self) -> list[tuple[str, int]]:
        return self.store.tags()

    def compare_runs(self, run_ids: list[str], *, metrics: list[str] | None = None,
                     x: str = "epoch") -> dict[str, Any]:
        """What comparing runs shows: their runs-table rows (in the order given), the diff of
        their settings, and the curves of ``metrics`` (default: losses and accuracies)."""
        if not 1 <= len(run_ids) <= compare.MAX_COMPARE_RUNS:
            raise ValueError(f"run_ids: 1 to {compare.MAX_COMPARE_RUNS} runs, got {len(run_ids)}")
        run_ids = list(dict.fromkeys(run_ids))
        runs = [self.get_run(r) for r in run_ids]  # NotFound names the first unknown one
        metrics = list(metrics or compare.DEFAULT_METRICS)
        architectures = {}
        for model_id in {r.model_id for r in runs}:
            model = self.store.get_model(model_id)
            architectures[model_id] = model.architecture if model else None
        table = self.store.runs_table(run_ids=run_ids, limit=len(run_ids))
        by_id = {row["run_id"]: row for row in table.rows}
        return {
            "run_ids": run_ids, "names": {r.run_id: r.name or r.run_id for r in runs},
            "rows": [by_id[r] for r in run_ids if r in by_id],
            "diff": compare.diff_rows(runs, architectures), "metrics": metrics, "x": x,
            "series": compare.metric_series(self.store, runs, metrics, x=x),
        }

    def runs_report(self, run_ids: list[str], *, metrics: list[str] | None = None,
                    x: str = "epoch", title: str | None = None) -> str:
        """A self-contained HTML report of the runs (see :mod:`workbench.service.report`)."""
        from .report import build_report

        data = self.compare_runs(run_ids, metrics=metrics, x=x)
        return build_report(title or f"Runs: {', '.join(data['names'].values())}"[:200],
                            data["rows"], data["diff"], data["series"], data["metrics"],
                            data["names"], x=x)

    # ---- external runs (workbench.track) ---------------------------------------------------
    def create_external_run(
        self, *, name: str, experiment: str = "default", config: dict[str, Any] | None = None,
        tags: list[str] | None = None, device: str | None = None,
    ) -> RunRecord:
        """A run trained outside workbench (``workbench.track``): created ``running`` with
        target ``"external"``; its name, experiment, tags and config are the run's hyperparams
        (``{"name", "experiment", "tags", "config"}``) and its ``run.started`` event."""
        meta = {"name": name, "experiment": experiment, "tags": list(tags or [])}
        run = self.store.create_external_run(hyperparams={**meta, "config": dict(config or {})},
                                             name=name, experiment=experiment, tags=tags or ())
        self.record_event(ev.make_event(ev.RUN_STARTED, run.run_id, device=device,
                                        epochs_total=0, external=True, **meta))
        return self.get_run(run.run_id)

    def _external_run(self, run_id: str, *, live: bool) -> RunRecord:
        run = self.get_run(run_id)
        if run.target != ev.EXTERNAL_TARGET:
            raise Conflict(f"run {run_id} is trained by workbench (target {run.target!r}); only "
                           "external runs (POST /api/runs) take logged metrics or a finish")
        if live and run.is_terminal:
            raise Conflict(f"run {run_id} is already {run.state}; it takes no more metrics")
        return run

    def log_metrics(self, run_id: str, columns: dict[str, list[Any]], *,
                    batch_id: str | None = None) -> tuple[int | None, bool]:
        """Store a batch of points of an external run (columns key, value, step, epoch, time
        of equal length): one ``metrics`` event through the write path. Returns (event id,
        stored); a ``batch_id`` the run already has stores nothing: (None, False)."""
        from ..store.events import DuplicateBatch

        # The state alone, not get_run: each batch invalidates the cached run, and its metrics
        # summary is an aggregate over every point of the run.
        found = self.store.run_state(run_id)
        if found is None:
            raise NotFound("run", run_id)
        state, target = found
        if target != ev.EXTERNAL_TARGET:
            raise Conflict(f"run {run_id} is trained by workbench (target {target!r}); only "
                           "external runs (POST /api/runs) take logged metrics or a finish")
        if state in TERMINAL_STATES:
            raise Conflict(f"run {run_id} is already {state}; it takes no more metrics")
        event = ev.make_event(ev.METRICS, run_id, batch_id=batch_id,
                              count=len(columns.get("value") or ()), **columns)
        try:
            event_id = self.store.apply_event(event)
        except DuplicateBatch:
            return None, False
        event = {**event, "id": event_id}
        self._invalidate(run_id)
        self.bus.publish(event)
        return event_id, True

    def finish_external_run(self, run_id: str, state: str = "succeeded", *,
                            error: str | None = None) -> RunRecord:
        """End an external run: ``succeeded``, ``failed`` (with ``error``) or ``cancelled``.
        Finishing again in the same state is a no-op (a retried request); another is Conflict."""
        kinds = {"succeeded": ev.RUN_COMPLETED, "failed": ev.RUN_FAILED,
                 "cancelled": ev.RUN_CANCELLED}
        if state not in kinds:
            raise ValueError(f"state: one of {', '.join(kinds)}, got {state!r}")
        run = self._external_run(run_id, live=False)
        if run.is_terminal:
            if run.state == state:
                return run
            raise Conflict(f"run {run_id} is already {run.state}; it cannot become {state}")
        data: dict[str, Any] = {}
        if state == "failed":
            data["error"] = error or "failed"
        elif error:
            data["message"] = error
        self.record_event(ev.make_event(kinds[state], run_id, **data))
        with self._lock:
            self._ended.discard(run_id)  # never dispatched here: nothing waits for it
        return self.get_run(run_id)

    def external_run_info(self, run_id: str) -> tuple[RunRecord, dict[str, Any]]:
        """An external run and its ``{"name", "experiment", "tags", "config"}``."""
        run = self._external_run(run_id, live=False)
        hp = run.hyperparams or {}
        # The run's columns, not its hyperparams: a rename or new tags show here too.
        return run, {"name": run.name or hp.get("name"), "experiment": run.experiment,
                     "tags": list(run.tags), "config": hp.get("config") or {}}

    def run_owner_key(self, run_id: str, owner_type: str = "run.owner") -> str | None:
        """The key id that started a run (its first ``owner_type`` event), cached: it never
        changes once logged."""
        owners: dict[str, str | None] = self.__dict__.setdefault("_owner_keys", {})
        if run_id in owners:
            return owners[run_id]
        event = self.store.event_of_type(run_id, owner_type)
        key_id = (event or {}).get("data", {}).get("key_id")
        owner = key_id if isinstance(key_id, str) else None
        if event is not None:
            if len(owners) >= _RUN_CACHE_MAX:
                owners.clear()
            owners[run_id] = owner
        return owner

    def wait_run(self, run_id: str, timeout: float | None = None, *,
                 until_paused: bool = False) -> RunRecord:
        """Block until the run is terminal (or paused, if asked; or ``timeout`` s passed);
        returns its record."""
        ended = threading.Event()
        unsubscribe = self.bus.subscribe(
            lambda e: ended.set() if e.get("type") in ev.ENDS_EXECUTION else None, run_id=run_id
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                run = self.get_run(run_id)
                if run.is_terminal or (until_paused and run.state == "paused"):
                    return run
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return run
                ended.wait(1.0 if left is None else min(1.0, left))
        finally:
            unsubscribe()

    def resume_queued(self) -> list[str]:
        """Re-dispatch runs a previous server left ``queued``; runs whose target is gone are
        failed with the reason. Returns the ids re-dispatched."""
        resumed: list[str] = []
        cursor: str | None = None
        while True:
            runs, cursor = self.store.list_runs(state="queued", limit=500, cursor=cursor)
            for run in runs:
                with self._lock:
                    known = run.run_id in self._active or any(
                        p[0] == run.run_id for p in self._pending)
                if known:
                    continue
                if self._executor(run.target) is None:
                    self.record_event(ev.make_event(
                        ev.RUN_FAILED, run.run_id,
                        error=f"target {run.target!r} is not available after a server restart"))
                    continue
                options: dict[str, Any] = {}
                for event in self.store.list_events(run.run_id):
                    if event["type"] == RUN_QUEUED:
                        options = event["data"]
                try:
                    spec = self._dispatch_spec(run, options)
                except NotFound as exc:
                    self.record_event(ev.make_event(
                        ev.RUN_FAILED, run.run_id, error=f"cannot resume after a restart: {exc}"))
                    continue
                self._enqueue(run.run_id, run.target, spec)
                resumed.append(run.run_id)
            if cursor is None:
                return resumed + checkpoints.resume_interrupted(self)

    # ---- params & inference -------------------------------------------------------------------
    def get_param_record(self, param_id: str) -> ParamRecord:
        record = self.store.get_params(param_id)
        if record is None:
            raise NotFound("param", param_id)
        return record

    def _architecture(self, model_id: str) -> Network:
        return validate_network(self.get_model(model_id).architecture, allow_dropout=True,
                                num_classes=None)

    def get_params(self, param_id: str) -> tuple[ParamRecord, Parameters]:
        from ..model import from_safetensors, to_parameters

        record = self.get_param_record(param_id)
        arch = self._architecture(record.model_id)
        if isinstance(arch, NetSpec):
            raise Conflict(f"param {param_id} belongs to a native-spec (input_shape) model, "
                           "which has no MNIST MLP API Parameters JSON; download it with "
                           "GET /api/v1/models/{job_id}/export or weights.safetensors")
        return record, to_parameters(arch, from_safetensors(record.safetensors))

    def trained_network(self, param_id: str) -> tuple[Network, dict[str, Any]]:
        """(architecture, weight tensors) of ``param_id``: what an export needs."""
        from ..model import from_safetensors

        record = self.get_param_record(param_id)
        return self._architecture(record.model_id), from_safetensors(record.safetensors)

    def loaded_model(self, param_id: str):
        """The cached, ready-to-run model of ``param_id`` (NotFound if unknown)."""

        def load():
            record = self.get_param_record(param_id)
            arch = self._architecture(record.model_id)
            return loaded_from_blob(record.model_id, param_id, arch, record.safetensors)

        return self._models.get(param_id, load)

    def infer(
        self, param_id: str, inputs: np.ndarray | list, *, logits: bool = False,
        probabilities: bool = True, labels: bool = True,
    ) -> dict[str, Any]:
        """``{"model_id", "param_id", "outputs": {...}, "latency_ms"}``; InvalidInput for
        inputs that do not fit the model."""
        started = time.perf_counter()
        loaded = self.loaded_model(param_id)
        x = check_inputs(inputs, loaded.architecture.input_size)
        return forward(loaded, x, logits=logits, probabilities=probabilities, labels=labels,
                       started=started)

    def infer_adhoc(
        self, architecture: dict[str, Any] | Architecture, parameters: dict[str, Any] | Parameters,
        inputs: np.ndarray | list, *, logits: bool = False, probabilities: bool = True,
        labels: bool = True,
    ) -> dict[str, Any]:
        """Forward pass with weights given inline; nothing is stored or cached.
        Raises ``ValidationError`` / ``ValueError`` for a bad architecture or parameters."""
        from ..model import from_parameters

        started = time.perf_counter()
        arch = validate_architecture(architecture)
        params = Parameters.model_validate(parameters)
        tensors = from_parameters(arch, params)
        bad = [f"parameters.layers[{name.split('.')[0]}]."
               f"{'W' if name.endswith('weight') else 'b'}: contains non-finite values"
               for name, t in tensors.items() if not bool(t.isfinite().all())]
        if bad:
            raise InvalidInput(bad)
        loaded = build_loaded(None, None, arch, tensors)
        x = check_inputs(inputs, arch.input_size)
        return forward(loaded, x, logits=logits, probabilities=probabilities, labels=labels,
                       started=started)

    # ---- misc ----------------------------------------------------------------------------------
    def query(self, sql: str, *, limit: int = 10_000) -> tuple[list[str], list[tuple]]:
        """Read-only SQL in the store's sandbox (PermissionError / ValueError / TimeoutError)."""
        return self.store.query(sql, limit=limit)

    def close(self) -> None:
        """Stop dispatching; runs still training are failed "interrupted (server shut down)"
        and their workers stopped; queued runs stay queued for the next start."""
        if self._sweeps is not None:
            self._sweeps.close()  # running sweeps end "interrupted", before their runs fail
        with self._lock:
            if self._closed:
                return
            self._closed = True
            active = dict(self._active)
            executors = list(self._executors.values())
        for run_id in active:
            self.record_event(ev.make_event(
                ev.RUN_FAILED, run_id, error="interrupted (server shut down)"))
        for executor in executors:
            try:
                executor.close()
            except Exception:
                log.exception("closing executor %s failed", getattr(executor, "kind", "?"))
        self.store.close()
