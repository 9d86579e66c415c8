"""A sweep's Optuna study, kept in a journal file under the home: ``sweeps/<sweep_id>.jsonl``.

Why a journal (``optuna.storages.JournalStorage``) and not the DuckDB store or SQLite: it is
Optuna's own durable format (append-only, one JSON line per operation, replayed on open), so
the study survives a restart of the owner with every trial's parameters, intermediate values
and state, without a second database engine beside DuckDB and without a copy of Optuna's
schema in ours. Only the owner process writes it (it runs the sweeps), like the DuckDB store.
What the workbench itself knows about a trial -- its run, metrics and events -- stays in the
store: a trial's ``run_id`` user attribute links the two.

The sweep's own record (spec, state, times, error) is the study's user attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from .spec import ChoiceParam, FloatParam, IntParam, SweepSpec, grid_points

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the workbench logs what matters

SUFFIX = ".jsonl"


def journal_path(root: Path, sweep_id: str) -> Path:
    return root / f"{sweep_id}{SUFFIX}"


def _storage(path: Path) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path.parent.mkdir(parents=True, exist_ok=True)
    # The open-lock (O_EXCL lock file) works on every filesystem the home may be on.
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return optuna.storages.JournalStorage(backend)


def distributions(spec: SweepSpec) -> dict[str, BaseDistribution]:
    """The Optuna distribution of every searched parameter."""
    out: dict[str, BaseDistribution] = {}
    for name, param in spec.space.params().items():
        if param.values is not None or isinstance(param, ChoiceParam):
            out[name] = CategoricalDistribution(list(param.values or ()))
        elif isinstance(param, IntParam):
            assert param.low is not None and param.high is not None
            out[name] = IntDistribution(param.low, param.high, log=param.log,
                                        step=param.step or 1)
        else:
            assert isinstance(param, FloatParam) and param.low is not None \
                and param.high is not None
            out[name] = FloatDistribution(param.low, param.high, log=param.log,
                                          step=param.step)
    return out


def sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    kind, seed = spec.sampler.type, spec.sampler.seed
    if kind == "grid":
        grid = {name: grid_points(name, p) for name, p in spec.space.params().items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    options: dict[str, Any] = {"seed": seed}
    if spec.sampler.n_startup_trials is not None:
        options["n_startup_trials"] = spec.sampler.n_startup_trials
    # constant_liar: parallel trials see the running ones as (pessimistic) results, so two
    # workers do not sample the same region at once.
    return optuna.samplers.TPESampler(constant_liar=spec.parallelism > 1, **options)


def pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                           n_warmup_steps=p.n_warmup_steps)
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource,
                                              reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


def create(root: Path, sweep_id: str, spec: SweepSpec, attrs: dict[str, Any]) -> optuna.Study:
    study = optuna.create_study(
        storage=_storage(journal_path(root, sweep_id)), study_name=sweep_id,
        direction=spec.objective.resolved_direction, sampler=sampler(spec), pruner=pruner(spec))
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    for point in spec.enqueue:  # asked for first, in order
        study.enqueue_trial(point, skip_if_exists=True)
    return study


def load(path: Path) -> optuna.Study:
    """A stored study (its sampler and pruner rebuilt from the spec it keeps)."""
    storage = _storage(path)
    name = path.name.removesuffix(SUFFIX)
    plain = optuna.load_study(study_name=name, storage=storage)
    spec = SweepSpec.model_validate(plain.user_attrs["spec"])
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler(spec),
                             pruner=pruner(spec))
