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
import logging
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from pydantic import ValidationError

from .. import events as ev
from ..config import get_settings
from ..executors.base import Executor, RunHandle
from ..spec import Architecture, Hyperparams, Parameters, validate_architecture
from ..store import ModelRecord, ParamRecord, RunRecord, Store
from ..train import TrainResult
from ..train.job import RunSpec, execute
from .bus import EventBus
from .errors import Conflict, NotFound
from .inference import ModelCache, build_loaded, check_inputs, forward, loaded_from_blob

log = logging.getLogger(__name__)

RUN_QUEUED = "run.queued"  # logged only: the dispatch options, for re-dispatch on restart
_RUN_CACHE_MAX = 4096


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
        self._active: dict[str, RunHandle] = {}
        self._ended: set[str] = set()  # terminal before submit() returned
        self._closed = False
        # The server alone writes runs, so a cache invalidated on each event is exact.
        self._runs: dict[str, RunRecord] = {}
        self._run_gen: dict[str, int] = {}
        self._runs_lock = threading.Lock()
        self._models = ModelCache()

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
        """Validate and store a model definition (raises pydantic ``ValidationError``)."""
        arch = validate_architecture(architecture, allow_dropout=allow_dropout)
        hp = Hyperparams.model_validate(hyperparams or {})
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
        contradicts the model's stored hyperparameters (e.g. ``epochs`` above the model's
        ``max_epochs``) raises ``Conflict``.
        """
        if not override:
            return Hyperparams.model_validate(model.hyperparams)
        Hyperparams.model_validate(override)
        try:
            return Hyperparams.model_validate(_merge(model.hyperparams, override))
        except ValidationError as exc:
            from ..spec import error_messages

            raise Conflict(
                "hyperparams: the override is inconsistent with the model's hyperparameters: "
                + "; ".join(error_messages(exc))
            ) from None

    def create_run(
        self, model_id: str, *, hyperparams: dict[str, Any] | None = None,
        dataset: str = "mnist", target: str = "local",
    ) -> tuple[RunRecord, Hyperparams]:
        from ..data import canonical_name

        model = self.get_model(model_id)
        hp = self.resolve_hyperparams(model, hyperparams)
        run = self.store.create_run(
            model_id=model_id, hyperparams=hp.to_json(), epochs_total=hp.epochs,
            dataset=canonical_name(dataset), target=target,
        )
        return run, hp

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
        initial_param_id: str | None = None,
    ) -> RunRecord:
        """Queue a run; it trains asynchronously on ``target``'s executor.

        ``spec_overrides`` are further JSON ``RunSpec`` fields (fine-tuning: freeze, data_url;
        allow_dropout for Cortex models); ``initial_param_id`` starts from a stored parameter
        set. Both are logged with the ``run.queued`` event, so ``resume_queued`` re-dispatches
        a run exactly as it was asked for after a server restart.
        """
        if self._executor(target) is None:
            raise ValueError(f"target: unknown target {target!r}; known: {', '.join(self.targets)}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit: must be a positive number of samples, got {limit}")
        if initial_param_id is not None:
            self.get_param_record(initial_param_id)  # NotFound before anything is queued
        run, _ = self.create_run(model_id, hyperparams=hyperparams, dataset=dataset, target=target)
        options = {"device": device, "limit": limit, "spec_overrides": spec_overrides or {},
                   "initial_param_id": initial_param_id}
        self.record_event(ev.make_event(RUN_QUEUED, run.run_id, target=target, **options))
        self._enqueue(run.run_id, target, self._dispatch_spec(run, options))
        return self.get_run(run.run_id)

    def _dispatch_spec(self, run: RunRecord, options: dict[str, Any]) -> RunSpec:
        """The RunSpec of a queued run from its logged ``run.queued`` options."""
        overrides = dict(options.get("spec_overrides") or {})
        if options.get("initial_param_id"):
            blob = self.get_param_record(options["initial_param_id"]).safetensors
            overrides["initial_weights_b64"] = base64.b64encode(blob).decode("ascii")
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
        try:
            # The log id travels with the live event: a face that replays the log from its
            # last id and then follows live events sees each event exactly once.
            event = {**event, "id": self.store.apply_event(event)}
        except Exception:
            log.exception("could not store %s event of %s", event.get("type"), run_id)
        if isinstance(run_id, str):
            with self._runs_lock:
                self._run_gen[run_id] = self._run_gen.get(run_id, 0) + 1
                self._runs.pop(run_id, None)
        self.bus.publish(event)
        if event.get("type") in ev.TERMINAL and isinstance(run_id, str):
            with self._lock:
                if self._active.pop(run_id, None) is None:
                    self._ended.add(run_id)
            self._pump()

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

    def wait_run(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Block until the run is terminal (or ``timeout`` s passed); returns its record."""
        ended = threading.Event()
        unsubscribe = self.bus.subscribe(
            lambda e: ended.set() if e.get("type") in ev.TERMINAL else None, run_id=run_id
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                run = self.get_run(run_id)
                if run.is_terminal:
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
                return resumed

    # ---- params & inference -------------------------------------------------------------------
    def get_param_record(self, param_id: str) -> ParamRecord:
        record = self.store.get_params(param_id)
        if record is None:
            raise NotFound("param", param_id)
        return record

    def _architecture(self, model_id: str) -> Architecture:
        return validate_architecture(self.get_model(model_id).architecture, allow_dropout=True)

    def get_params(self, param_id: str) -> tuple[ParamRecord, Parameters]:
        from ..model import from_safetensors, to_parameters

        record = self.get_param_record(param_id)
        arch = self._architecture(record.model_id)
        return record, to_parameters(arch, from_safetensors(record.safetensors))

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
        loaded = build_loaded(None, None, arch, from_parameters(arch, params))
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
