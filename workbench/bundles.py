"""Run bundles: one portable file (a zip) holding everything about a finished run, to move it
to another home (``POST /api/bundles``, ``workbench bundle import``) and train it again
(``workbench rerun``) to check it reproduces.

Layout (every JSON file UTF-8; ``manifest.json`` lists the SHA-256 of each other file, checked
on reading):

    manifest.json          format, version, run (state, name, experiment, tags, dataset,
                           target, device, hyperparams, ...), model (id, architecture and
                           hyperparameters), dispatch options (sample cap, device, overrides),
                           dataset reference and checksum, environment (python, torch, ...)
    metrics.json           [[epoch, step, name, value, time], ...] (the store's metrics rows)
    events.jsonl           the run's event log, one event per line
    parameters.safetensors the trained weights (succeeded runs)

Pure functions over bytes, no store: the service writes and imports bundles, the CLI reads
them to compare a rerun with the original.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import platform
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Any

FORMAT = "nn-workbench.run-bundle"
VERSION = 1
MANIFEST, METRICS, EVENTS, PARAMETERS = ("manifest.json", "metrics.json", "events.jsonl",
                                         "parameters.safetensors")
# Per-epoch metrics a rerun must reproduce (timing varies from run to run by nature).
COMPARED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
            "test_accuracy")
MAX_MEMBER_BYTES = 512 * 1024 * 1024  # a member larger than this is refused (zip bombs)


class BundleError(ValueError):
    """A file that is not a valid run bundle; the message says what is wrong."""


@dataclass
class Bundle:
    manifest: dict[str, Any]
    metrics: list[list[Any]]
    events: list[dict[str, Any]]
    parameters: bytes | None = field(default=None, repr=False)

    @property
    def run(self) -> dict[str, Any]:
        return self.manifest["run"]

    @property
    def model(self) -> dict[str, Any]:
        return self.manifest["model"]

    @property
    def options(self) -> dict[str, Any]:
        return self.manifest.get("options") or {}

    def epoch_metrics(self) -> dict[tuple[int, str], float | None]:
        """{(epoch, name): value} of the compared metrics."""
        return {(int(e), str(n)): v for e, _s, n, v, _t in self.metrics if n in COMPARED}


def environment() -> dict[str, Any]:
    """Where a bundle was made: Python, platform and the versions of the packages that decide
    a run's numbers."""
    from importlib import metadata

    packages = {}
    for name in ("nn-workbench", "torch", "numpy", "safetensors", "duckdb", "pydantic"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(),
            "packages": packages}


def write(manifest: dict[str, Any], metrics: list[list[Any]], events: list[dict[str, Any]],
          parameters: bytes | None) -> bytes:
    """The bundle file's bytes (``manifest`` gets format, version and file checksums)."""
    members = {METRICS: json.dumps(metrics, default=str).encode(),
               EVENTS: "".join(json.dumps(e, default=str) + "\n" for e in events).encode()}
    if parameters is not None:
        members[PARAMETERS] = parameters
    manifest = {"format": FORMAT, "version": VERSION, **manifest,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1, default=str))
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def read(data: bytes) -> Bundle:
    """Parse and verify a bundle (``BundleError`` naming what is wrong)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise BundleError("bundle: not a zip file (export one with `workbench bundle export` "
                          "or GET /api/runs/{run_id}/bundle)") from None
    with archive:
        names = set(archive.namelist())
        for info in archive.infolist():
            if info.file_size > MAX_MEMBER_BYTES:
                raise BundleError(f"bundle: {info.filename} is {info.file_size} bytes "
                                  f"uncompressed (at most {MAX_MEMBER_BYTES})")
        if MANIFEST not in names:
            raise BundleError(f"bundle: no {MANIFEST} in the zip")
        try:
            manifest = json.loads(archive.read(MANIFEST))
        except ValueError as exc:
            raise BundleError(f"bundle: {MANIFEST} is not JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"bundle: {MANIFEST} format is not {FORMAT!r}")
        if manifest.get("version") != VERSION:
            raise BundleError(f"bundle: version {manifest.get('version')!r} is not {VERSION} "
                              "(made by another nn-workbench)")
        files = manifest.get("files") or {}
        contents: dict[str, bytes] = {}
        for name in (METRICS, EVENTS, PARAMETERS):
            if name not in files:
                continue
            if name not in names:
                raise BundleError(f"bundle: {name} is listed in {MANIFEST} but missing")
            contents[name] = archive.read(name)
            if hashlib.sha256(contents[name]).hexdigest() != files[name]:
                raise BundleError(f"bundle: {name} does not match its SHA-256 in {MANIFEST}")
    for key in ("run", "model"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"bundle: {MANIFEST} has no {key!r} object")
    if not isinstance(manifest["run"].get("run_id"), str) or \
            not isinstance(manifest["model"].get("architecture"), dict):
        raise BundleError(f"bundle: {MANIFEST} needs run.run_id and model.architecture")
    try:
        metrics = json.loads(contents.get(METRICS, b"[]"))
        events = [json.loads(line) for line in contents.get(EVENTS, b"").splitlines() if line]
    except ValueError as exc:
        raise BundleError(f"bundle: metrics or events are not JSON ({exc})") from None
    if not isinstance(metrics, list) or not all(_metric_row(m) for m in metrics):
        raise BundleError(f"bundle: {METRICS} must be a list of [epoch, step, name, value, "
                          "time] rows (integer epoch and step, string name, number value)")
    if not all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in events):
        raise BundleError(f"bundle: every line of {EVENTS} must be an event with a 'type'")
    if manifest["run"].get("state") not in ("succeeded", "failed", "cancelled"):
        raise BundleError(f"bundle: run.state must be succeeded, failed or cancelled, got "
                          f"{manifest['run'].get('state')!r}")
    return Bundle(manifest=manifest, metrics=metrics, events=events,
                  parameters=contents.get(PARAMETERS))


def _metric_row(row: Any) -> bool:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    return (isinstance(row, list) and len(row) == 5 and isinstance(row[0], int)
            and (row[1] is None or isinstance(row[1], int)) and isinstance(row[2], str)
            and (row[3] is None or number(row[3])))


@dataclass
class Comparison:
    rows: list[tuple[int, str, float | None, float | None, float | None]]  # epoch, name, a, b, diff
    tolerance: float

    @property
    def equal(self) -> bool:
        return all(diff is not None and diff <= self.tolerance for *_rest, diff in self.rows)


def compare(original: Bundle, rerun: Bundle, *, tolerance: float = 0.0) -> Comparison:
    """Per-epoch compared metrics of two bundles side by side; a metric only one of them has,
    or a difference over ``tolerance`` (absolute), makes them unequal."""
    a, b = original.epoch_metrics(), rerun.epoch_metrics()
    rows = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        diff = abs(x - y) if x is not None and y is not None and math.isfinite(x - y) else \
            (0.0 if x is None and y is None and key in a and key in b else None)
        rows.append((key[0], key[1], x, y, diff))
    return Comparison(rows=rows, tolerance=tolerance)
