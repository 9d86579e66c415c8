"""One sweep's driver thread: ask Optuna for a trial, submit it as a run, feed its epochs to
the pruner, tell Optuna how it ended; up to ``parallelism`` trials at once, until the budget.

Every Optuna call happens on this thread: the service's event bus (whose callbacks run on
executor threads) only queues the events of the sweep's runs here. Runs go through
``Workbench.start_run`` like any other run, so every target works and the queue limits apply;
a pruned trial's run is stopped with ``Workbench.cancel_run``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import events as ev
from .spec import FINAL_ONLY, SweepSpec, trial_hyperparams, trial_layer_sizes

log = logging.getLogger(__name__)

RUN_OWNER = "run.owner"  # the event naming the key that started a run (Workbench.run_owner_key)
POLL_S = 0.5  # how often the thread looks at its runs when no event arrives
MAX_FAILED_STARTS = 3  # trials in a row that could not even be submitted: the sweep fails


@dataclass
class _Live:
    trial: optuna.Trial
    unsubscribe: Any
    told: bool = False  # pruned: Optuna has its verdict while the run is still stopping
    started: float = field(default_factory=time.time)


class SweepRunner:
    def __init__(self, service: Any, study: optuna.Study, spec: SweepSpec, *, sweep_id: str,
                 base_layers: list[int], target: str, overrides: dict[str, Any],
                 experiment: str, owner_key: str | None, on_finish: Any):
        from .study import distributions

        self.service, self.study, self.spec, self.sweep_id = service, study, spec, sweep_id
        self.base_layers, self.target, self.overrides = base_layers, target, overrides
        self.experiment, self.owner_key, self.on_finish = experiment, owner_key, on_finish
        self.distributions = distributions(spec)
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._live: dict[str, _Live] = {}
        self._models: dict[tuple[Any, ...], str] = {}
        self._stop: str | None = None  # "cancelled" | "interrupted"
        self._thread = threading.Thread(target=self._main, name=f"sweep-{sweep_id}",
                                        daemon=True)

    # ---- control (any thread) ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, why: str = "cancelled") -> None:
        """``cancelled``: cancel the running trials' runs; ``interrupted`` (shutdown): leave
        them to the service, which fails them."""
        self._stop = why
        self._events.put({"type": "wake"})

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ---- the loop (this thread) ------------------------------------------------------------
    def _main(self) -> None:
        try:
            state, error = self._loop()
        except Exception as exc:  # never leave a sweep "running" with nobody driving it
            log.exception("sweep %s failed", self.sweep_id)
            state, error = "failed", f"{type(exc).__name__}: {exc}"
        for run_id in list(self._live):
            self._forget(run_id)
        self.on_finish(self.sweep_id, state, error)

    def _loop(self) -> tuple[str, str | None]:
        budget = self.spec.trial_budget()
        deadline = (time.monotonic() + self.spec.budget.time_s) if self.spec.budget.time_s \
            else None
        # Trials already asked (a resumed journal); enqueued points wait to be asked.
        started = sum(t.state != TrialState.WAITING for t in self.study.get_trials(deepcopy=False))
        failed_starts = 0
        while True:
            self._drain(POLL_S if self._live else 0.05)
            for run_id in [r for r in self._live if self.service.get_run(r).is_terminal]:
                self._end(run_id)  # a terminal event missed (the run ended before subscribe)
            if self._stop:
                return self._stopped(self._stop)
            more = (budget is None or started < budget) and (
                deadline is None or time.monotonic() < deadline)
            while more and len(self._live) < self.spec.parallelism and self._queue_has_room():
                ok = self._start_trial()
                started += 1
                failed_starts = 0 if ok else failed_starts + 1
                if failed_starts >= MAX_FAILED_STARTS:
                    return "failed", (f"{MAX_FAILED_STARTS} trials in a row could not start; "
                                      f"the last: {self._last_error}")
                more = (budget is None or started < budget) and (
                    deadline is None or time.monotonic() < deadline)
            if not more and not self._live:
                return "completed", None

    def _queue_has_room(self) -> bool:
        from ..service.errors import QueueFull

        try:
            self.service.check_queue()
        except QueueFull:
            return False  # other runs fill the queue: try again on the next turn
        return True

    def _stopped(self, why: str) -> tuple[str, str | None]:
        for run_id, live in list(self._live.items()):
            if why == "cancelled":
                self.service.cancel_run(run_id)
            if not live.told:
                live.trial.set_user_attr("error", f"sweep {why}")
                self.study.tell(live.trial, state=TrialState.FAIL)
                live.told = True
        return why, "the owner shut down" if why == "interrupted" else None

    _last_error: str | None = None

    def _start_trial(self) -> bool:
        trial = self.study.ask(self.distributions)
        params = trial.params
        layers = trial_layer_sizes(self.base_layers, params)
        activation = params.get("activation", "relu")
        trial.set_user_attr("layer_sizes", layers)
        try:
            model_id = self._model(layers, activation)
            run = self.service.start_run(
                model_id, hyperparams=trial_hyperparams(self.spec.hyperparams, params),
                dataset=self.spec.dataset, target=self.target, device=self.spec.device,
                limit=self.spec.limit, spec_overrides=self.overrides or None,
                name=f"{self.spec.name or self.sweep_id}-t{trial.number}",
                experiment=self.experiment, tags=["sweep", f"sweep:{self.sweep_id}"])
        except (ValueError, KeyError, RuntimeError) as exc:  # SubmitError, Conflict, NotFound
            self._last_error = str(exc)
            trial.set_user_attr("error", f"could not start: {exc}")
            self.study.tell(trial, state=TrialState.FAIL)
            return False
        trial.set_user_attr("run_id", run.run_id)
        if self.owner_key:  # the sweep's creator may cancel its trials (workbench.api.policy)
            self.service.record_event(ev.make_event(RUN_OWNER, run.run_id,
                                                    key_id=self.owner_key, via="sweep"))
        unsubscribe = self.service.bus.subscribe(self._events.put, run_id=run.run_id)
        self._live[run.run_id] = _Live(trial, unsubscribe)
        return True

    def _model(self, layers: list[int], activation: str) -> str:
        """One stored model per distinct architecture of the sweep."""
        from ..spec import Architecture

        key = (tuple(layers), activation)
        if key not in self._models:
            arch = Architecture.from_layer_sizes(layers, activation=activation)
            name = f"{self.spec.name or self.sweep_id}-{'-'.join(map(str, layers))}"
            if activation != "relu":
                name += f"-{activation}"
            model = self.service.create_model(arch.to_json(), self.spec.hyperparams, name=name)
            self._models[key] = model.model_id
        return self._models[key]

    def _drain(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._handle(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _handle(self, event: dict[str, Any]) -> None:
        run_id = event.get("run_id")
        live = self._live.get(run_id) if isinstance(run_id, str) else None
        if live is None:
            return
        kind = event.get("type")
        if kind in ev.TERMINAL:
            self._end(run_id)  # type: ignore[arg-type]
        elif kind == ev.EPOCH and not live.told and self.spec.objective.metric not in FINAL_ONLY:
            data = event.get("data") or {}
            value, step = data.get(self.spec.objective.metric), data.get("epoch")
            if value is None or not _finite(value) or not isinstance(step, int):
                return
            live.trial.report(float(value), step)
            if live.trial.should_prune():
                live.trial.set_user_attr("pruned_at_epoch", step)
                self.study.tell(live.trial, state=TrialState.PRUNED)
                live.told = True
                self.service.cancel_run(run_id)  # its slot frees when the run has stopped

    def _end(self, run_id: str) -> None:
        live = self._live.get(run_id)
        if live is None:
            return
        self._forget(run_id)
        if live.told:
            return
        run = self.service.get_run(run_id)
        value = run.metrics.get(self.spec.objective.metric)
        if run.state == "succeeded" and value is not None and _finite(value):
            self.study.tell(live.trial, float(value))
            return
        if run.state == "succeeded":
            why = f"the run reported no {self.spec.objective.metric}"
        else:
            why = f"run {run.state}" + (f": {run.error}" if run.error else "")
        live.trial.set_user_attr("error", why)
        self.study.tell(live.trial, state=TrialState.FAIL)

    def _forget(self, run_id: str) -> None:
        live = self._live.pop(run_id, None)
        if live is not None:
            live.unsubscribe()


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
