"""Export a run as a bundle (:mod:`workbench.bundles`), import one into this home, and train
a bundle's run again (``rerun``): functions over a :class:`workbench.service.Workbench`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import bundles
from .errors import Conflict, NotFound

if TYPE_CHECKING:
    from ..store import RunRecord
    from .workbench import Workbench

RERUN_TAG = "rerun"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def dataset_reference(wb: Workbench, run: RunRecord, source: str | None) -> dict[str, Any]:
    """The run's dataset: its name, where the data came from (``run.started``), and a
    checksum: SHA-256 of a registered dataset's prepared file or of the bundled subset's
    files; for a downloaded built-in the MD5s every download is verified against."""
    from ..data import DATASETS
    from . import datasets as registry

    reference: dict[str, Any] = {"name": run.dataset, "source": source}
    info = DATASETS.get(run.dataset)
    if info is None:
        record = registry.resolve(wb.store, run.dataset)
        if record is not None and record.file:
            reference["checksum"] = {"sha256": _sha256_files([Path(record.file)])}
        return reference
    if source == "bundled-subset":
        from ..data.datasets import BUNDLED_DIR, BUNDLED_FILES

        files = [BUNDLED_DIR / BUNDLED_FILES[role] for role in sorted(BUNDLED_FILES)]
        reference["checksum"] = {"sha256": _sha256_files(files)}
    else:
        reference["checksum"] = {"md5": {role: f.md5 for role, f in info.files.items()}}
    return reference


def _sha256_files(paths: list[Path]) -> str | None:
    digest = hashlib.sha256()
    try:
        for path in paths:
            digest.update(path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest() if paths else None


def export_bundle(wb: Workbench, run_id: str) -> bytes:
    """The bundle of a finished run (``Conflict`` while it is still queued, running or
    paused)."""
    run = wb.get_run(run_id)
    if not run.is_terminal:
        raise Conflict(f"run {run_id} is {run.state}; export it once it has finished")
    model = wb.get_model(run.model_id) if run.model_id != "external" else None
    events = wb.store.list_events(run_id)
    options: dict[str, Any] = {}
    started: dict[str, Any] = {}
    for event in events:
        if event["type"] == "run.queued":
            options = event["data"]
        elif event["type"] == "run.started" and not started:
            started = event["data"]
    metrics = [[m.epoch, m.step, m.name, m.value, _iso(m.time)]
               for m in wb.store.get_metrics(run_id)]
    parameters = wb.get_param_record(run.param_id).safetensors if run.param_id else None
    manifest = {
        "run": {"run_id": run.run_id, "name": run.name, "experiment": run.experiment,
                "tags": list(run.tags), "notes": run.notes, "state": run.state,
                "error": run.error, "epoch": run.epoch, "epochs_total": run.epochs_total,
                "hyperparams": run.hyperparams, "dataset": run.dataset, "target": run.target,
                "device": run.device, "created_at": _iso(run.created_at),
                "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at)},
        "model": {"model_id": run.model_id, "name": model.name if model else run.model_id,
                  "architecture": model.architecture if model else {},
                  "hyperparams": model.hyperparams if model else {},
                  "created_at": _iso(model.created_at) if model else None},
        "options": {k: options.get(k) for k in ("device", "limit", "spec_overrides",
                                                "checkpoint_every") if k in options},
        "dataset": dataset_reference(wb, run, started.get("dataset_source")),
        "environment": bundles.environment(),
        "final_metrics": dict(run.metrics),
    }
    return bundles.write(manifest, metrics, events, parameters)


def import_bundle(wb: Workbench, data: bytes) -> RunRecord:
    """Store a bundle's run here under its own ids (``BundleError`` for a bad file,
    ``Conflict`` if this home has that run already)."""
    bundle = bundles.read(data)
    if not bundle.model.get("architecture"):
        raise bundles.BundleError("bundle: an external (tracked) run has no model to import")
    from ..model import from_safetensors

    if bundle.parameters is not None:
        try:
            from_safetensors(bundle.parameters)
        except Exception as exc:
            raise bundles.BundleError(f"bundle: {bundles.PARAMETERS} is not safetensors "
                                      f"({exc})") from None
    try:
        return wb.store.import_run(model=bundle.model, run=bundle.run, metrics=bundle.metrics,
                                   events=bundle.events, parameters=bundle.parameters,
                                   size_bytes=None)
    except ValueError as exc:
        raise Conflict(f"cannot import: {exc}") from None


def rerun(wb: Workbench, data: bytes, *, target: str = "local") -> tuple[str, RunRecord]:
    """Import the bundle's run if this home lacks it, then train it again as it was asked for
    (architecture, hyperparameters and seed, dataset, sample cap), tagged ``rerun``. Returns
    (original run id, the new run)."""
    bundle = bundles.read(data)
    original = bundle.run["run_id"]
    try:
        wb.get_run(original)
    except NotFound:
        import_bundle(wb, data)
    options = bundle.options
    overrides = {k: v for k, v in (options.get("spec_overrides") or {}).items()
                 if k not in ("dataset_file", "num_classes")}  # re-resolved here
    new = wb.start_run(
        bundle.model["model_id"], hyperparams=bundle.run.get("hyperparams") or None,
        dataset=bundle.run.get("dataset") or "mnist", target=target,
        device=options.get("device") or "auto", limit=options.get("limit"),
        spec_overrides=overrides or None, name=f"{bundle.run.get('name') or original}-rerun"[:200],
        experiment=bundle.run.get("experiment"),
        tags=[*[t for t in bundle.run.get("tags") or () if t != RERUN_TAG], RERUN_TAG])
    return original, new
