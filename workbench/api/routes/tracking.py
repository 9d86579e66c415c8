"""Runs trained outside workbench (``workbench.track``): create, log metrics in batches, finish.

    POST /api/runs                      {"name", "experiment", "config", "tags"} -> 201, running
    POST /api/runs/r_.../log-batch      {"batch_id": "...", "metrics": [{"key", "value", "step",
                                         "timestamp"?, "epoch"?}, ...]}    (at most 10,000)
                                        or {"batch_id", "columns": {"key": [...], "value": [...],
                                         "step": [...], "timestamp"?: [...], "epoch"?: [...]}}
    POST /api/runs/r_.../finish         {"state": "succeeded" | "failed" | "cancelled", "error"?}
    GET  /api/runs/r_.../tracking       the run with its name, experiment, tags and config

Modelled on MLflow's ``log-batch``; ``timestamp`` is in seconds since the epoch (default: when
the batch arrives), ``epoch`` defaults to 0. A batch is all or nothing: any invalid point
(a non-finite value, a missing key, ...) refuses it with 422 naming the index. ``batch_id``
makes it idempotent: a retried batch the run already has is answered 200 with
``"duplicate": true`` and stored once. The points become ``metrics`` rows (``workbench sql``)
through the service's one write path: one ``metrics`` event per batch, streamed live like
engine events (``GET /api/runs/{id}/events``, the websocket).

Scopes (``workbench.api.policy``): ``train`` to create, log and finish -- logging to and
finishing a run another key created needs ``admin`` -- and ``read`` for ``/tracking``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...auth import allows
from ...service.errors import Conflict, NotFound
from ...store import ApiKeyRecord, RunRecord
from ..deps import BodyDep, ServiceDep
from ..errors import ERROR_RESPONSES, error_response
from ..policy import RUN_OWNER, TrainKey, record_run_owner, requires
from ..schemas import RunName, RunPublic, RunTag
from ..views import json_response, run_view

router = APIRouter(prefix="/runs", tags=["tracking"])

MAX_POINTS = 10_000  # points per log-batch request
MAX_KEY_LENGTH = 250  # MLflow's limit for a metric key
MAX_BATCH_ID_LENGTH = 200
MAX_ERRORS = 20  # error lines in one 422 answer
_MAX_TIME_S = 1e11  # "seconds" past year ~5100 are milliseconds, most likely
_INT64 = 2**63
_POINT_FIELDS = frozenset({"key", "value", "step", "timestamp", "epoch"})
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "not an external run, or the run has already ended"}}
_FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"description": "the run was created by another key (needs admin)"}}


# ---- bodies ----------------------------------------------------------------------------------
class TrackedRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: RunName = Field(description="what the run is called")
    experiment: RunName = Field(default="default", description="a group of comparable runs")
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="hyperparameters and settings (any JSON object)")
    tags: list[RunTag] = Field(default_factory=list, max_length=100,
                               description="labels (no commas or line breaks)")
    device: str | None = Field(default=None, max_length=100,
                               description="where it trains (cpu, cuda:0, ...)")

    @field_validator("config")
    @classmethod
    def _storable(cls, config: dict[str, Any]) -> dict[str, Any]:
        try:  # what the store and every answer will have to write
            orjson.dumps(config)
        except TypeError as exc:
            raise ValueError(f"not storable as JSON ({exc}: integers must fit in 64 bits, "
                             "nesting at most 255 deep)") from None
        return config


class MetricPoint(BaseModel):
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    value: float = Field(description="a finite number")
    step: int
    timestamp: float | None = Field(default=None, description="seconds since the epoch "
                                    "(default: when the batch arrives)")
    epoch: int | None = Field(default=None, ge=0, le=2**31 - 1, description="default 0")


class MetricColumns(BaseModel):
    """The same points as equal-length columns (compact: what ``workbench.track`` sends)."""

    key: list[str]
    value: list[float]
    step: list[int]
    timestamp: list[float | None] | None = None
    epoch: list[int | None] | None = None


class LogBatch(BaseModel):
    """The body of ``log-batch`` (parsed by the route itself, for speed): ``metrics`` (a list
    of points, as MLflow's log-batch) or ``columns``, not both."""

    batch_id: str | None = Field(default=None, min_length=1, max_length=MAX_BATCH_ID_LENGTH,
                                 description="the client's id of this batch: a retry with the "
                                 "same id is stored once")
    metrics: list[MetricPoint] | None = Field(default=None, min_length=1, max_length=MAX_POINTS)
    columns: MetricColumns | None = Field(default=None, description="instead of metrics")


class LogBatchResult(BaseModel):
    run_id: str
    batch_id: str | None
    accepted: int = Field(description="points stored by this request (0 for a duplicate)")
    duplicate: bool = Field(description="the run already had this batch_id: nothing stored")
    event_id: int | None = Field(description="the batch's event in the run's event log")


class TrackedRunFinish(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["succeeded", "failed", "cancelled"] = "succeeded"
    error: str | None = Field(default=None, max_length=10_000,
                              description="why it failed (or a note on a cancellation)")


class TrackedRun(RunPublic):  # name, experiment and tags: RunPublic's
    config: dict[str, Any]


_LOG_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LogBatch"}}},
    }
}


def tracked_view(run: RunRecord, meta: dict[str, Any]) -> dict[str, Any]:
    return {**run_view(run), **meta}


def _invalid(errors: list[str]) -> Response:
    return error_response(422, "input validation failed", errors[:MAX_ERRORS])


def _conflict(exc: Conflict) -> Response:
    return error_response(409, str(exc), [f"run_id: {exc}"])


# ---- routes ----------------------------------------------------------------------------------
@router.post("", status_code=201, response_model=TrackedRun, responses=ERROR_RESPONSES)
def create_tracked_run(body: TrackedRunCreate, service: ServiceDep,
                       key: TrainKey) -> Response:
    """Start tracking a run trained elsewhere (a script, a notebook): it is ``running``, with
    target ``external``, until ``finish``."""
    run = service.create_external_run(name=body.name, experiment=body.experiment,
                                      config=body.config, tags=body.tags, device=body.device)
    record_run_owner(service, run.run_id, key, via="track")
    run, meta = service.external_run_info(run.run_id)
    return json_response(tracked_view(run, meta), status_code=201)


def _check_owner(service: Any, run_id: str, key: ApiKeyRecord | None) -> Response | None:
    """403 unless ``key`` created the run or is an admin key (a cached lookup: this runs on
    every batch)."""
    if key is None or allows(key, "admin"):
        return None
    if service.store.run_state(run_id) is None:  # 404 first
        raise NotFound("run", run_id)
    owner = service.run_owner_key(run_id, RUN_OWNER)
    if owner == key.key_id:
        return None
    who = "another key" if owner else "no recorded key"
    return error_response(403, f"this API key ({key.permissions}) lacks the 'admin' permission: "
                          f"run {run_id} was created by {who}")


@router.post("/{run_id}/log-batch", response_model=LogBatchResult,
             responses={**ERROR_RESPONSES, **_CONFLICT, **_FORBIDDEN},
             openapi_extra=_LOG_BATCH_BODY)
def log_batch(run_id: str, body: BodyDep, service: ServiceDep,
              key: TrainKey) -> Response:
    """Store up to 10,000 metric points of an external run in one request (all or nothing;
    idempotent by ``batch_id``)."""
    refused = _check_owner(service, run_id, key)
    if refused is not None:
        return refused
    parsed = parse_log_batch(body)
    if isinstance(parsed, Response):
        return parsed
    batch_id, columns = parsed
    try:
        event_id, stored = service.log_metrics(run_id, columns, batch_id=batch_id)
    except Conflict as exc:
        return _conflict(exc)
    return json_response({"run_id": run_id, "batch_id": batch_id,
                          "accepted": len(columns["value"]) if stored else 0,
                          "duplicate": not stored, "event_id": event_id})


@router.post("/{run_id}/finish", response_model=TrackedRun,
             responses={**ERROR_RESPONSES, **_CONFLICT, **_FORBIDDEN})
def finish_tracked_run(run_id: str, body: TrackedRunFinish, service: ServiceDep,
                       key: TrainKey) -> Response:
    """End an external run. Repeating a finish with the same state is a no-op."""
    refused = _check_owner(service, run_id, key)
    if refused is not None:
        return refused
    try:
        run = service.finish_external_run(run_id, body.state, error=body.error)
        run, meta = service.external_run_info(run.run_id)
    except Conflict as exc:
        return _conflict(exc)
    return json_response(tracked_view(run, meta))


@router.get("/{run_id}/tracking", response_model=TrackedRun,
            responses={**ERROR_RESPONSES, **_CONFLICT}, dependencies=[Depends(requires("read"))])
def get_tracked_run(run_id: str, service: ServiceDep) -> Response:
    """An external run with its name, experiment, tags and config."""
    try:
        run, meta = service.external_run_info(run_id)
    except Conflict as exc:
        return _conflict(exc)
    return json_response(tracked_view(run, meta))


# ---- parsing log-batch -----------------------------------------------------------------------
_COLUMN_FIELDS = ("key", "value", "step", "timestamp", "epoch")


def parse_log_batch(raw: bytes, *, now: float | None = None
                    ) -> tuple[str | None, dict[str, list[Any]]] | Response:
    """The body of a log-batch request as (batch_id, columns), or the error response.

    orjson first; a body it refuses is retried with the stdlib parser, which reads the
    ``NaN``/``Infinity`` literals Python's ``json`` writes, so those are refused with 422
    naming their index rather than 400 for the whole body. A vectorised check covers the usual
    all-valid batch; any doubt falls back to a point-by-point check that names every offending
    point (up to 20)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return error_response(400, "invalid JSON", [f"body: invalid JSON ({exc})"])
    if not isinstance(body, dict):
        return _invalid(["body: expected a JSON object {\"batch_id\", \"metrics\": [...]}"])
    errors = [f"{name}: unknown field" for name in body
              if name not in ("batch_id", "metrics", "columns")]
    batch_id = body.get("batch_id")
    if batch_id is not None and (not isinstance(batch_id, str) or not batch_id
                                 or len(batch_id) > MAX_BATCH_ID_LENGTH):
        errors.append(f"batch_id: a string of 1..{MAX_BATCH_ID_LENGTH} characters")
    points, given = body.get("metrics"), body.get("columns")
    if (points is None) == (given is None):
        errors.append("metrics: required, a list of {\"key\", \"value\", \"step\"} points "
                      "(or \"columns\": {\"key\": [...], \"value\": [...], \"step\": [...]})")
    elif points is not None:
        if not isinstance(points, list):
            errors.append("metrics: a list of {\"key\", \"value\", \"step\"} points")
        elif not points:
            errors.append("metrics: at least one point")
        elif len(points) > MAX_POINTS:
            errors.append(f"metrics: at most {MAX_POINTS} points per request, got {len(points)}")
    else:
        errors += _column_shape_errors(given)
    if errors:
        return _invalid(errors)
    received = time.time() if now is None else now
    if points is not None:
        columns = _point_columns(points, received)
    else:
        assert isinstance(given, dict)  # _column_shape_errors checked it
        columns = _checked(given, received, lambda name, i: f"columns.{name}[{i}]")
    if isinstance(columns, list):
        return _invalid(columns)
    return batch_id, columns


def _column_shape_errors(given: Any) -> list[str]:
    if not isinstance(given, dict):
        return ["columns: an object of equal-length lists key, value, step (timestamp, epoch)"]
    errors = [f"columns.{name}: unknown column" for name in given if name not in _COLUMN_FIELDS]
    for name in ("key", "value", "step"):
        if name not in given:
            errors.append(f"columns.{name}: required")
    lengths = set()
    for name in _COLUMN_FIELDS:
        column = given.get(name)
        if column is None:
            continue
        if not isinstance(column, list):
            errors.append(f"columns.{name}: a list")
        else:
            lengths.add(len(column))
    if len(lengths) > 1:
        errors.append(f"columns: every column needs the same length, got {sorted(lengths)}")
    elif lengths:
        n = lengths.pop()
        if n < 1:
            errors.append("columns: at least one point")
        elif n > MAX_POINTS:
            errors.append(f"columns: at most {MAX_POINTS} points per request, got {n}")
    return errors


def _point_columns(points: list[Any], received: float) -> dict[str, list[Any]] | list[str]:
    """The MLflow-style list of points as columns (then checked like ``columns``)."""
    where = lambda name, i: f"metrics[{i}].{name}"  # noqa: E731
    if all(type(p) is dict for p in points) and set().union(*points) <= _POINT_FIELDS:
        given = {name: [p.get(name) for p in points] for name in _COLUMN_FIELDS}
        return _checked(given, received, where)
    errors: list[str] = []
    for i, point in enumerate(points):
        if not isinstance(point, dict):
            errors.append(f"metrics[{i}]: expected an object {{\"key\", \"value\", \"step\"}}")
        else:
            errors += [f"metrics[{i}].{name}: unknown field" for name in point
                       if name not in _POINT_FIELDS]
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def _checked(given: dict[str, Any], received: float, where: Callable[[str, int], str]
             ) -> dict[str, list[Any]] | list[str]:
    """Validated columns {"key", "value", "step", "epoch", "time"}, or the error lines."""
    n = len(given["key"])
    times = given.get("timestamp") or [None] * n
    epochs = given.get("epoch") or [None] * n
    fast = _fast(given["key"], given["value"], given["step"], times, epochs, received)
    if fast is not None:
        return fast
    errors: list[str] = []
    columns: dict[str, list[Any]] = {"key": [], "value": [], "step": [], "epoch": [], "time": []}
    for i, (key, value, step, stamp, epoch) in enumerate(
            zip(given["key"], given["value"], given["step"], times, epochs)):
        if len(errors) >= MAX_ERRORS:
            break
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
            errors.append(f"{where('key', i)}: required, a string of 1..{MAX_KEY_LENGTH} "
                          "characters")
        if not _is_number(value):
            errors.append(f"{where('value', i)}: required, a finite number (got {value!r:.40})")
        elif not math.isfinite(value):
            errors.append(f"{where('value', i)}: must be finite (got {value!r})")
        if not isinstance(step, int) or isinstance(step, bool) or not -_INT64 <= step < _INT64:
            errors.append(f"{where('step', i)}: required, an integer (got {step!r:.40})")
        stamp = received if stamp is None else stamp
        if not _is_number(stamp) or not (math.isfinite(stamp) and 0 <= stamp < _MAX_TIME_S):
            errors.append(f"{where('timestamp', i)}: seconds since the epoch (got "
                          f"{stamp!r:.40})")
        epoch = 0 if epoch is None else epoch
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**31:
            errors.append(f"{where('epoch', i)}: a non-negative integer (got {epoch!r:.40})")
        if not errors:
            columns["key"].append(key)
            columns["value"].append(float(value))
            columns["step"].append(step)
            columns["epoch"].append(epoch)
            columns["time"].append(float(stamp))
    return errors or columns


def _fast(keys: list[Any], values: list[Any], steps: list[Any], times: list[Any],
          epochs: list[Any], received: float) -> dict[str, list[Any]] | None:
    """Columns of an all-valid batch, checked in bulk; None when anything looks off."""
    import numpy as np

    if set(map(type, keys)) != {str} or not set(map(type, values)) <= {int, float} \
            or set(map(type, steps)) != {int}:
        return None
    lengths = list(map(len, keys))
    if min(lengths) < 1 or max(lengths) > MAX_KEY_LENGTH:
        return None
    try:
        value_array = np.array(values, dtype=np.float64)
        step_array = np.array(steps, dtype=np.int64)
    except (OverflowError, ValueError):
        return None
    if not np.isfinite(value_array).all():
        return None
    time_types = set(map(type, times))
    if time_types == {type(None)}:
        time_list = [received] * len(keys)
    else:
        if not time_types <= {int, float}:
            return None
        time_array = np.array(times, dtype=np.float64)
        if not (np.isfinite(time_array).all() and time_array.min() >= 0
                and time_array.max() < _MAX_TIME_S):
            return None
        time_list = time_array.tolist()
    epoch_types = set(map(type, epochs))
    if epoch_types == {type(None)}:
        epoch_list = [0] * len(keys)
    else:
        if epoch_types != {int} or min(epochs) < 0 or max(epochs) > 2**31 - 1:
            return None
        epoch_list = epochs
    return {"key": keys, "value": value_array.tolist(), "step": step_array.tolist(),
            "epoch": epoch_list, "time": time_list}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
