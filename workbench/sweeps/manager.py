"""``Sweeps``: create, list, read and cancel sweeps, in the owner (``Workbench.sweeps``).

    sweep = service.sweeps.create({"space": {"lr": {"low": 1e-4, "high": 0.1, "log": True}}})
    service.sweeps.get(sweep["sweep_id"], importance=True)   # trials, best so far, importances
    service.sweeps.cancel(sweep_id)

A sweep's views are plain JSON-able dicts (what every face shows): ``state`` (running,
completed, cancelled, failed, interrupted), trial ``counts``, the ``best`` trial so far and,
from ``get``, every trial (number, state, run_id, value, params, layer sizes, the objective per
epoch). Sweeps left running by a previous owner are ``interrupted`` when this one starts (the
service fails their runs the same way).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..service.errors import NotFound
from ..spec import SubmitError
from . import study as studies
from .runner import SweepRunner
from .spec import SweepSpec, check_spec

log = logging.getLogger(__name__)

_SWEEP_ID = re.compile(r"s_[0-9a-f]{12}")
STATES = ("running", "completed", "cancelled", "failed", "interrupted")
_TRIAL_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
                 TrialState.FAIL: "failed", TrialState.RUNNING: "running",
                 TrialState.WAITING: "waiting"}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Sweeps:
    def __init__(self, service: Any, root: Path):
        self.service, self.root = service, root
        self._lock = threading.RLock()
        self._studies: dict[str, optuna.Study] = {}
        self._runners: dict[str, SweepRunner] = {}
        self._importance: dict[str, tuple[int, dict[str, float]]] = {}
        self._interrupt_leftovers()

    # ---- create ----------------------------------------------------------------------------
    def create(self, spec: SweepSpec | dict[str, Any], *,
               owner_key: str | None = None) -> dict[str, Any]:
        """Validate (pydantic ``ValidationError``; ``SubmitError`` naming the field for values
        that could not train) and start the sweep; returns its view. ``owner_key``: the API
        key creating it, which may cancel it and its trials' runs."""
        from ..executors.targets import TargetError, choose

        spec = spec if isinstance(spec, SweepSpec) else SweepSpec.model_validate(spec)
        input_size, classes = self._dataset_shape(spec.dataset)
        base = check_spec(spec, input_size=input_size, classes=classes)
        if spec.target not in self.service.targets:
            raise SubmitError("target", f"unknown target {spec.target!r}; known: "
                              f"{', '.join(self.service.targets)}")
        try:
            target, overrides = choose(spec.target)
        except TargetError as exc:
            raise SubmitError(exc.field, exc.message) from None
        self._check_largest(spec, base)
        sweep_id = "s_" + secrets.token_hex(6)
        experiment = spec.experiment or f"sweep-{spec.name or sweep_id}"
        study = studies.create(self.root, sweep_id, spec, {
            "spec": spec.model_dump(mode="json", exclude_none=True), "experiment": experiment,
            "state": "running", "created_at": _now(), "finished_at": None, "error": None,
            "owner_key": owner_key})
        runner = SweepRunner(self.service, study, spec, sweep_id=sweep_id, base_layers=base,
                             target=target, overrides=overrides, experiment=experiment,
                             owner_key=owner_key, on_finish=self._finished)
        with self._lock:
            self._studies[sweep_id] = study
            self._runners[sweep_id] = runner
        runner.start()
        log.info("sweep %s started: %s trials on %s", sweep_id, spec.trial_budget(), target)
        return self.get(sweep_id)

    def _dataset_shape(self, dataset: str) -> tuple[int, int]:
        from ..data import DATASETS, canonical_name
        from ..service import datasets as registry

        try:
            info = DATASETS[canonical_name(dataset)]
            return info.input_size, len(info.classes)
        except ValueError:
            record = registry.resolve(self.service.store, dataset)
        if record is None:
            raise SubmitError("dataset", f"unknown dataset {dataset!r}; known: "
                              f"{', '.join(d['name'] for d in self.service.list_datasets())}")
        return int(math.prod(record.input_shape)), len(record.classes)

    @staticmethod
    def _check_largest(spec: SweepSpec, base: list[int]) -> None:
        """The largest network and batch the space allows must fit ``settings.limits``."""
        from ..spec import Architecture, check_model_limits
        from .spec import hidden_layers

        biggest: dict[str, Any] = {}
        for name, param in spec.space.params().items():
            if name in ("depth", "batch_size") or name.startswith("width"):
                biggest[name] = max(param.values) if param.values is not None else param.high
        layers = [base[0], *hidden_layers(base, biggest), base[-1]]
        batch = biggest.get("batch_size", spec.hyperparams.get("batch_size", 64))
        try:
            check_model_limits(Architecture.from_layer_sizes(layers), batch_size=int(batch))
        except SubmitError as exc:
            field = "space.width" if exc.field == "architecture" else "space.batch_size"
            raise SubmitError(field, f"the largest trial ({'-'.join(map(str, layers))}, batch "
                              f"{batch}) is over a limit: {exc.message}") from None

    # ---- read ------------------------------------------------------------------------------
    def list(self) -> list[dict[str, Any]]:
        """Every sweep, newest first, without its trial list."""
        with self._lock:
            for path in self.root.glob(f"*{studies.SUFFIX}"):
                self._study(path.name.removesuffix(studies.SUFFIX), missing_ok=True)
            ids = list(self._studies)
        views = [self._view(i, trials=False) for i in ids]
        return sorted(views, key=lambda v: v["created_at"] or "", reverse=True)

    def get(self, sweep_id: str, *, importance: bool = False) -> dict[str, Any]:
        view = self._view(sweep_id, trials=True)
        if importance:
            view["importance"] = self.importance(sweep_id)
        return view

    def owner(self, sweep_id: str) -> str | None:
        """The key id that created the sweep (None: the CLI's or app's own credential)."""
        return self._study(sweep_id).user_attrs.get("owner_key")

    def importance(self, sweep_id: str) -> dict[str, float]:
        """fANOVA parameter importances (``optuna.importance``) over the complete trials;
        empty until two of them differ. Cached until another trial completes."""
        study = self._study(sweep_id)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        cached = self._importance.get(sweep_id)
        if cached is not None and cached[0] == len(complete):
            return cached[1]
        result: dict[str, float] = {}
        if len(complete) >= 2:
            try:
                result = {k: float(v) for k, v in
                          optuna.importance.get_param_importances(study).items()}
            except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                log.debug("no importances for %s yet: %s", sweep_id, exc)
        self._importance[sweep_id] = (len(complete), result)
        return result

    def wait(self, sweep_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the sweep ends (or ``timeout``); returns its view."""
        self._study(sweep_id)
        with self._lock:
            runner = self._runners.get(sweep_id)
        if runner is not None:
            runner.join(timeout)
        return self.get(sweep_id)

    # ---- cancel / shutdown -----------------------------------------------------------------
    def cancel(self, sweep_id: str) -> dict[str, Any]:
        """Stop starting trials and cancel the running ones (the sweep ends ``cancelled``);
        a sweep that has ended is returned as it is."""
        self._study(sweep_id)
        with self._lock:
            runner = self._runners.get(sweep_id)
        if runner is not None:
            runner.stop("cancelled")
            runner.join(30)
        return self.get(sweep_id)

    def close(self) -> None:
        """The owner shuts down: running sweeps end ``interrupted``."""
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.stop("interrupted")
        for runner in runners:
            runner.join(10)

    def _finished(self, sweep_id: str, state: str, error: str | None) -> None:
        study = self._study(sweep_id)
        study.set_user_attr("state", state)
        study.set_user_attr("error", error)
        study.set_user_attr("finished_at", _now())
        with self._lock:
            self._runners.pop(sweep_id, None)
        log.info("sweep %s %s%s", sweep_id, state, f": {error}" if error else "")

    def _interrupt_leftovers(self) -> None:
        """Sweeps a previous owner left running have nobody driving them now."""
        if not self.root.is_dir():
            return
        for path in self.root.glob(f"*{studies.SUFFIX}"):
            study = self._study(path.name.removesuffix(studies.SUFFIX), missing_ok=True)
            if study is None or study.user_attrs.get("state") != "running":
                continue
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                study._storage.set_trial_user_attr(trial._trial_id, "error", "interrupted")
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.set_user_attr("state", "interrupted")
            study.set_user_attr("error", "the owner that ran it stopped")
            study.set_user_attr("finished_at", _now())

    def _study(self, sweep_id: str, *, missing_ok: bool = False) -> optuna.Study:
        with self._lock:
            study = self._studies.get(sweep_id)
            if study is not None:
                return study
            path = studies.journal_path(self.root, sweep_id)
            if not _SWEEP_ID.fullmatch(sweep_id) or not path.is_file():
                if missing_ok:
                    return None  # type: ignore[return-value]
                raise NotFound("sweep", sweep_id)
            try:
                study = studies.load(path)
            except Exception as exc:
                log.warning("cannot read sweep journal %s: %s", path, exc)
                if missing_ok:
                    return None  # type: ignore[return-value]
                raise NotFound("sweep", sweep_id) from None
            self._studies[sweep_id] = study
            return study

    # ---- views -----------------------------------------------------------------------------
    def _view(self, sweep_id: str, *, trials: bool) -> dict[str, Any]:
        study = self._study(sweep_id)
        attrs = study.user_attrs
        spec = SweepSpec.model_validate(attrs["spec"])
        frozen = study.get_trials(deepcopy=False)
        counts = {s: 0 for s in ("complete", "pruned", "failed", "running")}
        for t in frozen:
            key = _TRIAL_STATES.get(t.state, "running")
            counts[key if key in counts else "running"] += 1
        view: dict[str, Any] = {
            "sweep_id": sweep_id, "name": spec.name or sweep_id,
            "experiment": attrs.get("experiment"), "state": attrs.get("state"),
            "error": attrs.get("error"), "created_at": attrs.get("created_at"),
            "finished_at": attrs.get("finished_at"),
            "objective": spec.objective.metric, "direction": spec.objective.resolved_direction,
            "target": spec.target, "dataset": spec.dataset, "parallelism": spec.parallelism,
            "sampler": spec.sampler.type, "pruner": spec.pruner.type,
            "budget_trials": spec.trial_budget(), "counts": {"total": len(frozen), **counts},
            "best": self._best(study, frozen), "spec": attrs["spec"],
        }
        if trials:
            view["trials"] = [_trial_view(t) for t in frozen]
        return view

    @staticmethod
    def _best(study: optuna.Study, frozen: Sequence[FrozenTrial]) -> dict[str, Any] | None:
        if not any(t.state == TrialState.COMPLETE for t in frozen):
            return None
        return _trial_view(study.best_trial)


def _trial_view(t: FrozenTrial) -> dict[str, Any]:
    finished = t.datetime_complete
    started = t.datetime_start
    return {
        "number": t.number, "state": _TRIAL_STATES.get(t.state, str(t.state)),
        "run_id": t.user_attrs.get("run_id"), "value": t.value if t.state ==
        TrialState.COMPLETE else None, "params": dict(t.params),
        "layer_sizes": t.user_attrs.get("layer_sizes"),
        "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "pruned_at_epoch": t.user_attrs.get("pruned_at_epoch"), "error": t.user_attrs.get("error"),
        "duration_s": (finished - started).total_seconds() if finished and started else None,
    }
