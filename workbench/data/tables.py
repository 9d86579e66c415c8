"""The user's own datasets and the tables packages ship: read once, described, stored prepared.

Sources (:func:`read_source`):

- CSV or Parquet (read by DuckDB): feature columns (numbers) and a label column (``label``
  by default; any type: its distinct values, sorted, become the class names);
- NPZ: arrays ``x`` (or ``x_train``) and ``y`` (or ``y_train``), ``x`` shaped ``(N, ...)``;
- an image folder: one sub-folder per class, PNG/JPEG files read by Pillow, all of one size
  (greyscale -> ``[1, H, W]``, otherwise RGB ``[3, H, W]``);
- built-ins (:data:`BUILTIN_TABLES`): scikit-learn's bundled real data sets (digits 8x8 images,
  iris, wine, breast cancer) when scikit-learn is installed.

:func:`prepare` computes the schema, class names and counts and the per-feature mean/std once,
standardises the features and writes them as one ``.npz`` (float32 ``x``, int64 ``y``) that
runs load with :func:`load_prepared_splits`: a seeded train / validation / test split, whose
sizes and seed the run records.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets import Splits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_SHARE = 0.2  # of a prepared dataset: the held-out test split


@dataclass
class Table:
    x: np.ndarray  # (N, *input_shape) float32
    labels: np.ndarray  # (N,) raw label values
    input_shape: list[int]
    feature_names: list[str] = field(default_factory=list)
    kind: str = "table"  # table | images | builtin


def _sklearn_loader(name: str):
    def load() -> Table:
        import sklearn.datasets as skd

        bunch = getattr(skd, f"load_{name}")()
        x = np.asarray(bunch.data, dtype=np.float32)
        shape = [1, 8, 8] if name == "digits" else [x.shape[1]]
        names = [] if name == "digits" else [str(f) for f in bunch.feature_names]
        labels = np.asarray(bunch.target_names)[bunch.target]
        return Table(x.reshape(len(x), *shape), labels, shape, names, "builtin")
    return load


# name -> (title, loader); scikit-learn ships these real data sets inside its package
BUILTIN_TABLES = {
    "digits": ("scikit-learn digits (8x8 handwritten digits, UCI)", _sklearn_loader("digits")),
    "iris": ("scikit-learn iris (Fisher 1936)", _sklearn_loader("iris")),
    "wine": ("scikit-learn wine (UCI)", _sklearn_loader("wine")),
    "breast-cancer": ("scikit-learn breast cancer Wisconsin (UCI)",
                      _sklearn_loader("breast_cancer")),
}


def builtin_tables_available() -> bool:
    return importlib.util.find_spec("sklearn") is not None


def read_source(path: Path, *, label: str = "label", kind: str | None = None) -> Table:
    """Read a CSV/Parquet/NPZ file or an image folder (``ValueError`` naming what is wrong)."""
    if path.is_dir():
        return _read_images(path)
    suffix = (kind or path.suffix.lstrip(".")).lower()
    if suffix in ("csv", "parquet"):
        return _read_columns(path, suffix, label)
    if suffix == "npz":
        return _read_npz(path)
    raise ValueError(f"{path.name}: expected a .csv, .parquet or .npz file or an image folder")


def _read_columns(path: Path, kind: str, label: str) -> Table:
    import duckdb

    reader = "read_csv_auto" if kind == "csv" else "read_parquet"
    con = duckdb.connect(":memory:")
    try:
        rel = con.sql(f"SELECT * FROM {reader}(?)", params=[str(path)])  # type: ignore[call-arg]
        columns, types = rel.columns, [str(t) for t in rel.types]
        frame = rel.fetchnumpy()
    except duckdb.Error as exc:
        raise ValueError(f"{path.name}: not a readable {kind} file ({exc})") from None
    finally:
        con.close()
    return _columns_table(path.name, columns, types, frame, label)


def _columns_table(what: str, columns: list[str], types: list[str], frame: Any,
                   label: str) -> Table:
    """Feature columns (numbers) + a label column of a CSV, Parquet or query result."""
    if label not in columns:
        raise ValueError(f"{what}: no label column {label!r}; columns: {', '.join(columns)}")
    features = [c for c in columns if c != label]
    bad = [c for c, t in zip(columns, types) if c != label and not _numeric(t)]
    if bad:
        raise ValueError(f"{what}: feature columns must be numbers; not numeric: "
                         f"{', '.join(bad)}")
    if not features:
        raise ValueError(f"{what}: no feature columns besides {label!r}")
    x = np.stack([np.asarray(frame[c], dtype=np.float32) for c in features], axis=1)
    if len(x) == 0:
        raise ValueError(f"{what}: no rows")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: feature values must be finite numbers (found empty, "
                         "NaN or infinite cells)")
    return Table(x, np.asarray(frame[label]), [len(features)], features)


# --- cnn20b: a DuckDB query over registered tables as a dataset source (issue 20) ---
QUERY_MEMORY_LIMIT = "1GB"


def read_query(sql: str, tables: dict[str, Path], *, label: str = "label") -> Table:
    """The result of one ``SELECT`` over ``tables`` (name -> a CSV or Parquet file already
    registered, hence inside the data roots) as a dataset. Only those files are read, by this
    code, into an in-memory database; the user's SQL then runs with external access off
    (no files, URLs or extensions) and the configuration locked, so ``read_csv('/etc/passwd')``
    and ``SET enable_external_access = true`` are refused (``ValueError`` for both)."""
    import duckdb

    con = duckdb.connect(":memory:", config={"python_enable_replacements": False,
                                             "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    try:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise ValueError(f"query: {exc}") from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise ValueError("query: expected exactly one SELECT statement")
        for name, path in tables.items():
            reader = "read_parquet" if path.suffix.lower() == ".parquet" else "read_csv_auto"
            con.execute(f'CREATE TABLE "{name.replace(chr(34), chr(34) * 2)}" AS '
                        f"SELECT * FROM {reader}(?)", [str(path)])
        for setting, value in (("enable_external_access", "false"),
                               ("memory_limit", f"'{QUERY_MEMORY_LIMIT}'"),
                               ("lock_configuration", "true")):  # last: nothing changes after
            con.execute(f"SET {setting} = {value}")
        try:
            rel = con.sql(sql)
            columns, types = rel.columns, [str(t) for t in rel.types]
            frame = rel.fetchnumpy()
        except duckdb.Error as exc:
            raise ValueError(f"query: {exc}") from None
    finally:
        con.close()
    return _columns_table("query", columns, types, frame, label)
# --- end cnn20b ---


def _numeric(duck_type: str) -> bool:
    return duck_type.split("(")[0] in {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT",
                                        "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT",
                                        "DOUBLE", "DECIMAL", "BOOLEAN"}


def _read_npz(path: Path) -> Table:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            xk = "x" if "x" in keys else "x_train"
            yk = "y" if "y" in keys else "y_train"
            if xk not in keys or yk not in keys:
                raise ValueError(f"{path.name}: expected arrays 'x' and 'y' (or 'x_train' and "
                                 f"'y_train'), found {', '.join(sorted(keys)) or 'none'}")
            x, y = npz[xk], npz[yk].reshape(-1)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path.name}: not a readable .npz file ({exc})") from None
    if len(x) != len(y):
        raise ValueError(f"{path.name}: {len(x)} samples but {len(y)} labels")
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{path.name}: x must be (N, features), (N, H, W) or (N, C, H, W), "
                         f"got {list(x.shape)}")
    if x.ndim == 3:
        x = x[:, None]
    x = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    return Table(x, y, list(x.shape[1:]))


def _read_images(root: Path) -> Table:
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root.name}: an image folder needs one sub-folder per class")
    images, labels, size, mode = [], [], None, None
    for name in classes:
        files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            try:
                with Image.open(f) as img:
                    img.load()
                    mode = mode or ("L" if img.mode in ("L", "1", "I;16") else "RGB")
                    pixels = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            except OSError as exc:
                raise ValueError(f"{name}/{f.name}: not a readable image ({exc})") from None
            if size is None:
                size = pixels.shape[:2]
            elif pixels.shape[:2] != size:
                raise ValueError(f"{name}/{f.name}: {pixels.shape[1]}x{pixels.shape[0]} pixels, "
                                 f"but the first image is {size[1]}x{size[0]}; all must match")
            images.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
            labels.append(name)
    if not images:
        raise ValueError(f"{root.name}: no PNG or JPEG images in its class folders")
    x = np.stack(images)
    return Table(x, np.asarray(labels), list(x.shape[1:]), kind="images")


@dataclass
class Prepared:
    """What the registry stores about a dataset (and the prepared file it points at)."""

    input_shape: list[int]
    classes: list[str]
    counts: list[int]  # samples per class, index = label
    mean: list[float]  # per feature (tables) or per channel (images)
    std: list[float]
    n_samples: int
    feature_names: list[str]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prepare(table: Table, out: Path) -> Prepared:
    """Describe ``table`` and write its standardised features to ``out`` (an ``.npz``)."""
    values, y = np.unique(table.labels.astype(str) if table.labels.dtype.kind in "OU"
                          else table.labels, return_inverse=True)
    if len(values) < 2:
        raise ValueError("a classification dataset needs at least 2 classes, found "
                         f"{len(values)}")
    x = table.x.astype(np.float32)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)  # per feature, or per channel of an image
    mean, std = x.mean(axis=axes), x.std(axis=axes)
    std = np.where(std > 1e-8, std, 1.0)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
    x = ((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, x=x.reshape(len(x), -1), y=y.astype(np.int64))
    tmp.replace(out)
    return Prepared(list(table.input_shape), [str(v) for v in values],
                    np.bincount(y, minlength=len(values)).tolist(),
                    mean.astype(float).tolist(), std.astype(float).tolist(), int(len(y)),
                    table.feature_names)


def load_prepared_splits(path: Path, *, name: str, num_classes: int, train_split: float = 0.9,
                         seed: int = 42, limit: int | None = None) -> Splits:
    """Seeded splits of a prepared dataset: ``TEST_SHARE`` held out for test, then
    ``train_split`` of the rest for training, the remainder for validation."""
    with np.load(path, allow_pickle=False) as npz:
        x, y = torch.from_numpy(npz["x"]), torch.from_numpy(npz["y"])
    n = len(y)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = min(max(math.floor(n * TEST_SHARE), 1), n - 2) if n >= 3 else 0
    test, rest = perm[:n_test], perm[n_test:]
    n_train = len(rest) if train_split >= 1.0 else max(1, min(round(len(rest) * train_split),
                                                              len(rest) - 1))
    train_idx, val_idx = rest[:n_train], rest[n_train:]
    if limit is not None:
        train_idx = train_idx[:limit]
    return Splits(name=name, source=f"registered:{name} (seed {seed}, test share {TEST_SHARE})",
                  x_train=x[train_idx], y_train=y[train_idx], x_val=x[val_idx], y_val=y[val_idx],
                  x_test=x[test], y_test=y[test], mean=0.0, std=1.0, num_classes=num_classes,
                  input_size=int(x.shape[1]))
