"""The sweep spec: what to search, how to judge a trial, how many, how, and where.

    {"name": "lr-width", "dataset": "fashion-mnist", "target": "local", "limit": 4000,
     "space": {"lr": {"low": 1e-4, "high": 0.3, "log": true},
               "width": {"low": 32, "high": 512, "log": true}, "depth": {"values": [1, 2, 3]},
               "optimizer": {"values": ["sgd", "adam"]}},
     "hyperparams": {"epochs": 3},                 # the base every trial overrides
     "objective": {"metric": "val_accuracy"},      # direction: maximize (accuracy) / minimize
     "budget": {"trials": 16, "time_s": 1800}, "parallelism": 2,
     "sampler": {"type": "tpe", "seed": 0}, "pruner": {"type": "median"}}

Structure is checked by pydantic (errors name the field: ``space.lr.low``); whether the values
make trainable runs is checked by :func:`check_spec` against the spec's own rules
(``workbench.spec``), raising ``SubmitError`` naming the field. Torch- and optuna-free, so a
client can validate a spec before sending it.

Parameters map onto the MNIST MLP spec: ``lr``, ``momentum``, ``weight_decay`` and
``optimizer`` (its ``type``) are ``hyperparams.optimizer`` fields, ``batch_size`` and ``epochs``
hyperparameters; ``depth`` is the number of hidden layers, ``width`` the units of each of them,
``width_1`` .. ``width_4`` one hidden layer's units, ``activation`` the function between them.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..spec import MAX_LINEAR_LAYERS, SubmitError

MAX_HIDDEN = MAX_LINEAR_LAYERS - 1  # the MNIST MLP spec's linear-layer cap, minus the output
MAX_VALUES = 100
MAX_GRID = 10_000
OBJECTIVES = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "test_accuracy",
              "test_loss")
# Metrics known only once the run has finished: nothing to prune on.
FINAL_ONLY = ("test_accuracy", "test_loss")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Number = float | int


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _range_or_values(self) -> _Param:
        values, low, high = getattr(self, "values", None), getattr(self, "low", None), \
            getattr(self, "high", None)
        if values is not None:
            if low is not None or high is not None:
                raise ValueError("give either values or low/high, not both")
            if len(set(map(repr, values))) != len(values):
                raise ValueError("values must not repeat")
            return self
        if low is None or high is None:
            raise ValueError("give values, or both low and high")
        if not low < high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        if getattr(self, "log", False) and low <= 0:
            raise ValueError(f"a log scale needs low > 0, got {low}")
        step = getattr(self, "step", None)
        if step is not None and getattr(self, "log", False):
            raise ValueError("step and log cannot be combined")
        return self


class FloatParam(_Param):
    """A float: ``{"low", "high", "log", "step"}`` or ``{"values": [...]}``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    values: list[Number] | None = Field(default=None, min_length=1, max_length=MAX_VALUES)


class IntParam(_Param):
    """An integer: ``{"low", "high", "log", "step"}`` (both ends included) or ``{"values"}``."""

    low: int | None = Field(default=None, strict=True)
    high: int | None = Field(default=None, strict=True)
    log: bool = False
    step: int | None = Field(default=None, ge=1, strict=True)
    values: list[Annotated[int, Field(strict=True)]] | None = Field(
        default=None, min_length=1, max_length=MAX_VALUES)


class ChoiceParam(_Param):
    """One of named choices: ``{"values": ["sgd", "adam"]}``."""

    values: list[Annotated[str, StringConstraints(min_length=1, max_length=50)]] = Field(
        min_length=1, max_length=MAX_VALUES)


class SearchSpace(BaseModel):
    """The parameters searched (at least one); each maps onto the MLP spec (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    lr: FloatParam | None = None
    momentum: FloatParam | None = None
    weight_decay: FloatParam | None = None
    optimizer: ChoiceParam | None = None
    batch_size: IntParam | None = None
    epochs: IntParam | None = None
    depth: IntParam | None = None
    width: IntParam | None = None
    width_1: IntParam | None = None
    width_2: IntParam | None = None
    width_3: IntParam | None = None
    width_4: IntParam | None = None
    activation: ChoiceParam | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> SearchSpace:
        if not self.params():
            raise ValueError(f"search at least one parameter; known: {', '.join(PARAMS)}")
        return self

    def params(self) -> dict[str, FloatParam | IntParam | ChoiceParam]:
        return {k: v for k, v in self if v is not None}


PARAMS = tuple(SearchSpace.model_fields)


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: Literal["val_accuracy", "val_loss", "train_accuracy", "train_loss",
                    "test_accuracy", "test_loss"] = "val_accuracy"
    direction: Literal["maximize", "minimize"] | None = Field(
        default=None, description="default: maximize an accuracy, minimize a loss")

    @property
    def resolved_direction(self) -> Literal["maximize", "minimize"]:
        if self.direction:
            return self.direction
        return "maximize" if self.metric.endswith("accuracy") else "minimize"


class Budget(BaseModel):
    """When to stop starting trials: after ``trials`` of them, or ``time_s`` seconds (running
    trials then finish), whichever comes first."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trials: int | None = Field(default=None, ge=1, le=10_000, strict=True)
    time_s: float | None = Field(default=None, gt=0, le=7 * 86400)


class Sampler(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["tpe", "random", "grid"] = "tpe"
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, strict=True)
    n_startup_trials: int | None = Field(
        default=None, ge=0, le=1000, strict=True,
        description="tpe: random trials before the model (Optuna's default 10)")


class Pruner(BaseModel):
    """``median``: stop a trial whose metric at an epoch is worse than the median of finished
    trials at that epoch (after ``n_startup_trials`` finished and ``n_warmup_steps`` epochs);
    ``hyperband``: successive halving from ``min_resource`` epochs by ``reduction_factor``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["none", "median", "hyperband"] = "median"
    n_startup_trials: int = Field(default=5, ge=0, le=1000, strict=True)
    n_warmup_steps: int = Field(default=0, ge=0, le=1000, strict=True)
    min_resource: int = Field(default=1, ge=1, le=1000, strict=True)
    reduction_factor: int = Field(default=3, ge=2, le=100, strict=True)


class SweepSpec(BaseModel):
    """A sweep: trials are ordinary runs of one experiment (``experiment``, default
    ``sweep-<name>``) on ``target``, each a model built from the searched architecture."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                           max_length=100)] | None = Field(
        default=None, description="default: the sweep id; trials are runs <name>-t<number>")
    experiment: Name | None = Field(default=None, description="default: sweep-<name>")
    space: SearchSpace
    layer_sizes: list[Annotated[int, Field(ge=1, le=65536, strict=True)]] | None = Field(
        default=None, min_length=2, max_length=MAX_LINEAR_LAYERS + 1,
        description="the base MLP (input, hidden..., classes); default [input, 128, 64, "
                    "classes] of the dataset; depth/width override its hidden layers")
    hyperparams: dict[str, Any] = Field(
        default_factory=dict, description="the base hyperparameters (MNIST MLP API shape)")
    dataset: Name = "mnist"
    target: Name = "local"
    device: Name = "auto"
    limit: int | None = Field(default=None, ge=1, le=10_000_000, strict=True,
                              description="training samples per trial (a cap, for quick sweeps)")
    objective: Objective = Field(default_factory=Objective)
    budget: Budget = Field(default_factory=Budget)
    parallelism: int = Field(default=2, ge=1, le=64, strict=True,
                             description="trials training at once")
    sampler: Sampler = Field(default_factory=Sampler)
    pruner: Pruner = Field(default_factory=Pruner)
    enqueue: list[dict[str, Annotated[str, StringConstraints(max_length=50)] | Number]] = Field(
        default_factory=list, max_length=MAX_VALUES,
        description="points of the space tried first, in order, each naming every searched "
                    "parameter (Optuna's enqueue_trial): a configuration known to work, such "
                    "as today's default, so the sweep's best is at least as good")

    def trial_budget(self) -> int | None:
        """Trials to run: the budget's, capped by the grid's size; None: until ``time_s``."""
        grid = grid_size(self.space) if self.sampler.type == "grid" else None
        if self.budget.trials is None and self.budget.time_s is None:
            return grid or 10  # no budget given: the whole grid, or ten trials
        if grid is not None:
            return min(grid, self.budget.trials or grid)
        return self.budget.trials


def _grid_count(name: str, param: FloatParam | IntParam | ChoiceParam) -> int:
    """How many values a grid takes for ``param`` (SubmitError when a range has no grid)."""
    if param.values is not None:
        return len(param.values)
    assert isinstance(param, FloatParam | IntParam) and param.low is not None \
        and param.high is not None
    if isinstance(param, IntParam) and not param.log:
        return (param.high - param.low) // (param.step or 1) + 1
    if isinstance(param, FloatParam) and param.step:
        return int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
    raise SubmitError(f"space.{name}", "the grid sampler needs values (or a step) for this "
                      "range")


def grid_points(name: str, param: FloatParam | IntParam | ChoiceParam) -> list[Any]:
    """Every value a grid takes for ``param`` (SubmitError past ``MAX_GRID`` of them)."""
    count = _grid_count(name, param)
    if count > MAX_GRID:
        raise SubmitError(f"space.{name}", f"the grid would take {count} values; at most "
                          f"{MAX_GRID}")
    if param.values is not None:
        return list(param.values)
    assert param.low is not None and param.high is not None
    if isinstance(param, IntParam):
        return list(range(param.low, param.high + 1, param.step or 1))
    assert isinstance(param, FloatParam) and param.step
    return [param.low + i * param.step for i in range(count)]


def grid_size(space: SearchSpace) -> int:
    """The grid's points (counted, never listed: a fuzzed range may be astronomically long)."""
    size = 1
    for name, param in space.params().items():
        size *= _grid_count(name, param)
    return size


# ---- what a trial's parameters mean for the MLP spec -------------------------------------------
def hidden_layers(base: list[int], params: dict[str, Any]) -> list[int]:
    """The hidden widths of a trial: the base's hidden layers, ``depth`` of them (the last
    width repeated), each ``width`` units, ``width_i`` overriding layer ``i`` (1-based)."""
    hidden = list(base[1:-1]) or [128]
    depth = int(params.get("depth", len(hidden)))
    hidden = (hidden + [hidden[-1]] * depth)[:depth]
    if "width" in params:
        hidden = [int(params["width"])] * depth
    for i in range(depth):
        if f"width_{i + 1}" in params:
            hidden[i] = int(params[f"width_{i + 1}"])
    return hidden


def trial_layer_sizes(base: list[int], params: dict[str, Any]) -> list[int]:
    return [base[0], *hidden_layers(base, params), base[-1]]


def trial_hyperparams(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The base hyperparameters with the trial's values in place (MNIST MLP API shape)."""
    hp = {**base, "optimizer": dict(base.get("optimizer") or {})}
    for name in ("batch_size", "epochs"):
        if name in params:
            hp[name] = int(params[name])
    if "optimizer" in params:
        hp["optimizer"]["type"] = params["optimizer"]
    for name in ("lr", "momentum", "weight_decay"):
        if name in params:
            hp["optimizer"][name] = float(params[name])
    if not hp["optimizer"]:
        del hp["optimizer"]
    return hp


def _extremes(name: str, param: FloatParam | IntParam | ChoiceParam) -> list[tuple[str, Any]]:
    if param.values is not None:
        return [(f"space.{name}.values[{i}]", v) for i, v in enumerate(param.values)]
    return [(f"space.{name}.low", param.low), (f"space.{name}.high", param.high)]


def check_spec(spec: SweepSpec, *, input_size: int, classes: int) -> list[int]:
    """Raise ``SubmitError`` naming the field for a spec whose trials could not train: a
    value the MLP spec refuses (each end of a range, each listed value), a depth over the
    spec's linear-layer cap, a base network that does not fit the dataset, a grid too large,
    an objective with no validation data. Returns the base ``layer_sizes``."""
    from pydantic import ValidationError

    from ..spec import Architecture, Hyperparams, error_messages

    base = list(spec.layer_sizes or [input_size, 128, 64, classes])
    if base[0] != input_size:
        raise SubmitError("layer_sizes", f"starts with {base[0]} inputs but {spec.dataset} has "
                          f"{input_size} features per sample")
    if base[-1] != classes:
        raise SubmitError("layer_sizes", f"ends with {base[-1]} outputs but {spec.dataset} has "
                          f"{classes} classes")
    try:
        hp = Hyperparams.model_validate(spec.hyperparams)
    except ValidationError as exc:
        raise SubmitError("hyperparams", "; ".join(error_messages(exc))) from None
    if spec.objective.metric.startswith("val_") and hp.train_split >= 1.0:
        raise SubmitError("objective.metric", f"{spec.objective.metric} needs validation data "
                          "but hyperparams.train_split is 1.0")
    params = spec.space.params()
    for name, param in params.items():
        if name == "optimizer" or name == "activation":
            allowed = ("sgd", "adam", "adamw") if name == "optimizer" else ("relu", "tanh",
                                                                          "sigmoid")
            for field, value in _extremes(name, param):
                if value not in allowed:
                    raise SubmitError(field, f"one of {', '.join(allowed)}, got {value!r}")
            continue
        for field, value in _extremes(name, param):
            if name == "depth":
                if not 1 <= value <= MAX_HIDDEN:
                    raise SubmitError(field, f"hidden layers: 1 to {MAX_HIDDEN} (the MLP spec "
                                      f"allows {MAX_LINEAR_LAYERS} linear layers), got {value}")
                continue
            try:
                if name.startswith("width"):  # one hidden layer of that many units
                    Architecture.from_layer_sizes([base[0], value, base[-1]])
                else:
                    Hyperparams.model_validate(trial_hyperparams(spec.hyperparams,
                                                                 {name: value}))
            except (ValidationError, ValueError) as exc:
                why = "; ".join(error_messages(exc)) if isinstance(exc, ValidationError) \
                    else str(exc)
                raise SubmitError(field, why) from None
    if spec.sampler.type == "grid" and grid_size(spec.space) > MAX_GRID:
        raise SubmitError("space", f"the grid has {grid_size(spec.space)} points; at most "
                          f"{MAX_GRID}")
    _check_enqueued(spec)
    return base


def _check_enqueued(spec: SweepSpec) -> None:
    """Every enqueued point names exactly the searched parameters, each value inside its
    range (or one of its values), and fits the trial budget."""
    if not spec.enqueue:
        return
    if spec.sampler.type == "grid":
        raise SubmitError("enqueue", "the grid sampler tries every point of the grid already")
    budget = spec.trial_budget()
    if budget is not None and len(spec.enqueue) > budget:
        raise SubmitError("enqueue", f"{len(spec.enqueue)} points but a budget of {budget} "
                          "trials")
    params = spec.space.params()
    for i, point in enumerate(spec.enqueue):
        missing, unknown = sorted(set(params) - set(point)), sorted(set(point) - set(params))
        if missing or unknown:
            why = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"not searched: {', '.join(unknown)}"] if unknown else [])
            raise SubmitError(f"enqueue[{i}]", "names every searched parameter and no other: "
                              + "; ".join(why))
        for name, param in params.items():
            value, field = point[name], f"enqueue[{i}].{name}"
            if param.values is not None:
                if value not in param.values:
                    raise SubmitError(field, f"one of space.{name}.values, got {value!r}")
            elif isinstance(value, str) or isinstance(value, bool) or (
                    isinstance(param, IntParam) and not isinstance(value, int)):
                kind = "an integer" if isinstance(param, IntParam) else "a number"
                raise SubmitError(field, f"{kind}, got {value!r}")
            elif not (param.low is not None and param.high is not None
                      and param.low <= value <= param.high):
                raise SubmitError(field, f"inside space.{name}: {param.low} to {param.high}, "
                                  f"got {value}")
