"""The dataset registry behind the service facade: what may be registered (paths inside the data
roots, uploads into the home's data directory, scikit-learn's bundled tables), what a run of a
registered dataset is told (its prepared file and class count), and the catalogue every face
shows (MNIST-family built-ins and the registry)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .. import outbound
from ..config import get_settings
from ..spec import SubmitError
from ..store import Store
from ..store.datasets import DatasetRecord

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
UPLOAD_SUFFIXES = (".csv", ".parquet", ".npz")


def _data_dir() -> Path:
    return get_settings().data_dir


def _check_name(store: Store, name: str) -> None:
    from ..data import DATASETS

    if not NAME.match(name):
        raise SubmitError("name", f"{name!r}: use 1-64 lower-case letters, digits, '.', '_' or "
                          "'-', starting with a letter or digit")
    if name in DATASETS or store.get_dataset(name) is not None:
        raise SubmitError("name", f"a dataset named {name!r} already exists")


def register(store: Store, name: str, path: Path, *, label: str = "label",
             source: str | None = None) -> DatasetRecord:
    """Read, describe and store ``path`` (a file or image folder inside the data roots)."""
    from ..data.tables import prepare, read_source

    _check_name(store, name)
    if not path.exists() or not outbound.within_roots(path):
        raise SubmitError("path", f"{path}: not allowed (it must exist inside the data roots, "
                          "WORKBENCH_DATA_ROOTS)")
    try:
        table = read_source(path, label=label)
        prepared = prepare(table, _data_dir() / "datasets" / f"{name}.npz")
    except ValueError as exc:
        raise SubmitError("path", str(exc)) from None
    return _store(store, name, table.kind, source or str(path), prepared)


def register_upload(store: Store, name: str, filename: str, content: bytes, *,
                    label: str = "label") -> DatasetRecord:
    """Save an uploaded CSV/Parquet/NPZ into ``<data dir>/uploads`` and register it (the
    request body's size is capped by WORKBENCH_MAX_BODY_BYTES before it gets here)."""
    _check_name(store, name)
    suffix = Path(filename).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise SubmitError("file", f"{filename!r}: expected a {', '.join(UPLOAD_SUFFIXES)} file")
    target = _data_dir() / "uploads" / f"{name}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    roots = [*get_settings().file_roots, target.parent]
    if not outbound.within_roots(target, roots):  # the upload dir itself is always allowed
        raise SubmitError("file", "not allowed")
    from ..data.tables import prepare, read_source

    try:
        table = read_source(target, label=label)
        prepared = prepare(table, _data_dir() / "datasets" / f"{name}.npz")
    except ValueError as exc:
        target.unlink(missing_ok=True)
        raise SubmitError("file", str(exc)) from None
    return _store(store, name, table.kind, f"upload:{Path(filename).name}", prepared)


# --- cnn20b: a DuckDB query over registered CSV/Parquet datasets (issue 20) ---
MAX_QUERY_CHARS = 10_000


def table_file(record: DatasetRecord) -> Path | None:
    """The CSV/Parquet file a registered table was read from, if it still is one a query may
    read: inside the data roots (by path) or the home's upload directory (uploads)."""
    if record.kind != "table":
        return None
    if record.source.startswith("upload:"):
        suffix = Path(record.source[len("upload:"):]).suffix.lower()
        path = _data_dir() / "uploads" / f"{record.name}{suffix}"
        roots = [*get_settings().file_roots, path.parent]
    else:
        path, roots = Path(record.source), None
    if path.suffix.lower() not in (".csv", ".parquet") or not path.is_file():
        return None
    return path if outbound.within_roots(path, roots) else None


def register_query(store: Store, name: str, sql: str, *, label: str = "label") -> DatasetRecord:
    """Register the result of one read-only ``SELECT`` over registered CSV/Parquet datasets
    (named like tables: ``SELECT * FROM "wine-csv" WHERE ...``); the query reads nothing else
    (``workbench.data.tables.read_query``)."""
    from ..data.tables import prepare, read_query

    _check_name(store, name)
    if not sql.strip() or len(sql) > MAX_QUERY_CHARS:
        raise SubmitError("query", f"give one SELECT of at most {MAX_QUERY_CHARS} characters")
    tables = {r.name: path for r in store.list_datasets()
              if r.name in sql and (path := table_file(r)) is not None}
    try:
        table = read_query(sql, tables, label=label)
        prepared = prepare(table, _data_dir() / "datasets" / f"{name}.npz")
    except ValueError as exc:
        raise SubmitError("query", str(exc)) from None
    return _store(store, name, "query", f"query: {sql.strip()}", prepared)
# --- end cnn20b ---


def builtin_table(store: Store, name: str) -> DatasetRecord | None:
    """A scikit-learn bundled table, registered on first use (None if unknown/unavailable)."""
    from ..data.tables import BUILTIN_TABLES, builtin_tables_available, prepare

    if name not in BUILTIN_TABLES or not builtin_tables_available():
        return None
    title, load = BUILTIN_TABLES[name]
    table = load()
    prepared = prepare(table, _data_dir() / "datasets" / f"{name}.npz")
    return _store(store, name, "builtin", f"scikit-learn: {title}", prepared)


def _store(store: Store, name: str, kind: str, source: str, prepared: Any) -> DatasetRecord:
    return store.create_dataset(
        name=name, kind=kind, source=source,
        file=str(_data_dir() / "datasets" / f"{name}.npz"), input_shape=prepared.input_shape,
        classes=prepared.classes, counts=prepared.counts,
        stats={"mean": prepared.mean, "std": prepared.std,
               "feature_names": prepared.feature_names},
        n_samples=prepared.n_samples)


def resolve(store: Store, name: str) -> DatasetRecord | None:
    """The registered dataset ``name`` (id or name), registering a bundled table on first
    use; None for the MNIST-family built-ins (and unknown names: the caller says so)."""
    return store.get_dataset(name) or builtin_table(store, name)


def catalogue(store: Store) -> list[dict[str, Any]]:
    """Every dataset a run may name: built-ins first, then the registry."""
    from ..data import DATASETS
    from ..data.tables import BUILTIN_TABLES, builtin_tables_available

    items: list[dict[str, Any]] = [
        {"dataset_id": None, "name": key, "kind": "builtin", "title": info.title,
         "input_shape": [1, 28, 28], "classes": list(info.classes), "registered": True}
        for key, info in DATASETS.items()]
    registered = {r.name: r for r in store.list_datasets()}
    if builtin_tables_available():
        items += [{"dataset_id": None, "name": key, "kind": "builtin", "title": title,
                   "registered": False} for key, (title, _) in BUILTIN_TABLES.items()
                  if key not in registered]
    items += [view(r) for r in registered.values()]
    return items


def view(record: DatasetRecord) -> dict[str, Any]:
    return {"dataset_id": record.dataset_id, "name": record.name, "kind": record.kind,
            "source": record.source, "input_shape": record.input_shape,
            "classes": record.classes, "counts": record.counts, "n_samples": record.n_samples,
            "stats": record.stats, "registered": True,
            "created_at": record.created_at.isoformat() if record.created_at else None}


def test_split(store: Store, dataset: str, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """The test set a run of ``dataset`` was scored on, as the model takes it: ``{"x": (n,
    features) float32, "y": (n,) int64, "classes"}`` (a registered dataset's split is seeded by
    the run's ``seed`` and ``train_split``; MNIST's is its test file)."""
    from ..data import DATASETS, canonical_name, load_splits

    try:
        key = canonical_name(dataset)
    except ValueError:
        key = None
    if key is not None:
        splits = load_splits(key, progress=False, train_split=1.0)
        classes = list(DATASETS[key].classes)
    else:
        from ..data.tables import load_prepared_splits

        record = resolve(store, dataset)
        if record is None or record.file is None:
            raise SubmitError("dataset", f"unknown dataset {dataset!r}")
        splits = load_prepared_splits(Path(record.file), name=record.name,
                                      num_classes=len(record.classes),
                                      train_split=float(hyperparams.get("train_split", 0.9)),
                                      seed=int(hyperparams.get("seed", 42)))
        classes = list(record.classes)
    return {"x": splits.x_test.numpy(), "y": splits.y_test.numpy(), "classes": classes}
