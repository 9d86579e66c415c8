"""Entities -> response dicts (serialized with orjson: the status endpoint is polled hard)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi.responses import Response

from ..store import ModelRecord, RunRecord


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def model_view(model: ModelRecord) -> dict[str, Any]:
    return {
        "model_id": model.model_id,
        "name": model.name,
        "architecture": model.architecture,
        "hyperparams": model.hyperparams,
        "created_at": _iso(model.created_at),
    }


def run_view(run: RunRecord) -> dict[str, Any]:
    view: dict[str, Any] = {
        "run_id": run.run_id,
        "model_id": run.model_id,
        "state": run.state,
        "epoch": run.epoch,
        "epochs_total": run.epochs_total,
        "metrics": run.metrics,
        "dataset": run.dataset,
        "target": run.target,
        "device": run.device,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "name": run.name,
        "experiment": run.experiment,
        "tags": list(run.tags),
        "notes": run.notes,
    }
    if run.param_id and run.state == "succeeded":
        view["param_id"] = run.param_id
    if run.error:
        view["error"] = run.error
    return view


def json_response(content: Any, status_code: int = 200) -> Response:
    # orjson writes NaN/inf as null, so a diverged loss never produces invalid JSON.
    return Response(orjson.dumps(content), status_code=status_code,
                    media_type="application/json")
