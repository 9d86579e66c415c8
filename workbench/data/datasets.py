"""Public loaders: MNIST / Fashion-MNIST as ready-to-train, normalized, split tensors.

Where the data comes from, in order:

- MNIST: ``data_dir`` itself if it holds the four IDX files ("local-dir"), the verified cache
  ``<data_dir>/mnist`` ("cache"), a download ("download"), and, when the network is unavailable
  or ``offline`` is set, the real 5,000-image MNIST subset shipped in ``bundled/``
  ("bundled-subset"), announced by one line on stderr.
- Fashion-MNIST: ``data_dir`` or ``settings.fashion_mnist_dir`` (Debian's
  ``dataset-fashion-mnist`` package) holding the IDX files ("local-dir"), the verified cache
  ``<data_dir>/fashion-mnist``, a download; otherwise :class:`DatasetUnavailableError`.

Parsed arrays are memoized in-process, so repeated loads only pay for splitting/normalizing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from workbench.data.download import (
    FASHION_MNIST_FILES,
    FASHION_MNIST_MIRRORS,
    MNIST_FILES,
    DownloadError,
    RemoteFile,
    _with_checksums,
    fetch_all,
    mnist_mirrors,
    verified_cache,
)
from workbench.data.idx import read_idx, read_idx_header

__all__ = [
    "BUNDLED_DIR",
    "BUNDLED_FILES",
    "DATASETS",
    "DatasetInfo",
    "DatasetUnavailableError",
    "RawData",
    "Splits",
    "canonical_name",
    "class_names",
    "load_raw",
    "load_splits",
]

log = logging.getLogger("workbench.data")

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_FILES: dict[str, str] = {
    "train_images": "mnist-subset-train-images-idx3-ubyte.gz",
    "train_labels": "mnist-subset-train-labels-idx1-ubyte.gz",
    "test_images": "mnist-subset-test-images-idx3-ubyte.gz",
    "test_labels": "mnist-subset-test-labels-idx1-ubyte.gz",
}
BUNDLED_NOTICE = "using the bundled 5,000-image real MNIST subset (4,000 train / 1,000 test)"
_ROLES = ("train_images", "train_labels", "test_images", "test_labels")
# After a "cannot reach any mirror" failure, skip the network for a while: a notebook that
# reloads data every cell should not pay the connect timeouts each time.
_UNREACHABLE_TTL_S = 60.0
_unreachable_until: dict[tuple[str, ...], tuple[float, str]] = {}


class DatasetUnavailableError(RuntimeError):
    """No local copy, no cache and no download: the data set cannot be loaded here."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set: default normalization, class names, files, mirrors."""

    name: str
    title: str
    mean: float
    std: float
    classes: tuple[str, ...]
    files: Mapping[str, RemoteFile]
    mirrors: tuple[str, ...]
    has_bundled_subset: bool = False
    input_size: int = 784  # features per sample (28 x 28 pixels)
    train_size: int = 60_000  # images in the full training file a download brings


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        mean=0.1307,
        std=0.3081,
        classes=tuple(str(d) for d in range(10)),
        files=MNIST_FILES,
        mirrors=(),  # resolved at call time: settings.mnist_mirror first, then the public ones
        has_bundled_subset=True,
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        mean=0.2860,
        std=0.3530,
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        files=FASHION_MNIST_FILES,
        mirrors=FASHION_MNIST_MIRRORS,
    ),
}
_ALIASES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "fashion": "fashion-mnist",
}


def canonical_name(name: str) -> str:
    """``"MNIST"``, ``"fashion_mnist"``, ``"Fashion-MNIST"`` ... -> ``"mnist"`` / ``"fashion-mnist"``."""
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return _ALIASES[key]


def class_names(name: str) -> list[str]:
    """Human-readable class names, index = label."""
    return list(DATASETS[canonical_name(name)].classes)


# --------------------------------------------------------------------------- Splits


@dataclass
class Splits:
    """Train / validation / test tensors, flattened to (N, 784) float32 and normalized."""

    name: str  # "mnist" | "fashion-mnist"
    source: str  # "download" | "cache" | "bundled-subset" | "local-dir"
    x_train: torch.Tensor  # (N, 784) float32, normalized
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    num_classes: int = 10
    input_size: int = 784

    def to(self, device: str | torch.device) -> Splits:
        """A copy with every tensor on ``device``."""
        device = torch.device(device)
        # non_blocking only towards an accelerator: a non-blocking copy *to* the CPU may be
        # read before it has landed.
        non_blocking = device.type != "cpu"
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    @property
    def class_names(self) -> list[str]:
        return class_names(self.name)

    def __repr__(self) -> str:  # the default repr would print every pixel
        return (
            f"Splits(name={self.name!r}, source={self.source!r}, train={len(self.y_train)}, "
            f"val={len(self.y_val)}, test={len(self.y_test)}, mean={self.mean}, std={self.std}, "
            f"device={self.x_train.device})"
        )


class RawData(NamedTuple):
    """Unnormalized data as stored: uint8 images (N, 28, 28), int64 labels (N,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str


# --------------------------------------------------------------------------- parsing


_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _stamp(paths: Mapping[str, Path]) -> tuple[tuple[str, int, int], ...]:
    """Cache key for parsed files: a replaced or modified file gets parsed again."""
    out = []
    for role in _ROLES:
        st = paths[role].stat()
        out.append((str(paths[role]), st.st_size, st.st_mtime_ns))
    return tuple(out)


@lru_cache(maxsize=4)  # real MNIST is ~55 MB parsed: keep a few sets, not every one ever seen
def _parse(stamp: tuple[tuple[str, int, int], ...]) -> _Arrays:
    arrays = tuple(read_idx(path) for path, _, _ in stamp)
    x_train, y_train, x_test, y_test = arrays
    names = [Path(path).name for path, _, _ in stamp]
    for x, y, xn, yn in (
        (x_train, y_train, names[0], names[1]),
        (x_test, y_test, names[2], names[3]),
    ):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(
                f"{xn}: expected uint8 images of shape (N, 28, 28), got {x.dtype} {x.shape}"
            )
        if y.dtype != np.uint8 or y.ndim != 1:
            raise ValueError(f"{yn}: expected a 1-D uint8 label array, got {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{xn} has {len(x)} images but {yn} has {len(y)} labels")
        if len(y) and int(y.max()) > 9:
            raise ValueError(f"{yn}: label {int(y.max())} out of range 0-9")
    # Shared by every caller: load_splits only reads them, load_raw hands out copies.
    return x_train, y_train, x_test, y_test


def _find_local(directory: Path | None, files: Mapping[str, RemoteFile]) -> dict[str, Path] | None:
    """The four IDX files in ``directory`` (gzip or uncompressed names), or None."""
    if directory is None or not directory.is_dir():
        return None
    found: dict[str, Path] = {}
    for role in _ROLES:
        gz = directory / files[role].filename
        candidates = (gz, gz.with_suffix("")) if gz.suffix == ".gz" else (gz,)
        match = next((c for c in candidates if c.is_file()), None)
        if match is None:
            return None
        found[role] = match
    return found


def _local_dirs(name: str, data_dir: str | Path | None) -> list[Path]:
    from workbench.config import get_settings

    dirs = [Path(data_dir).expanduser()] if data_dir is not None else []
    if name == "fashion-mnist":
        dirs.append(get_settings().fashion_mnist_dir)
    return dirs


def _cache_dir(name: str, data_dir: str | Path | None) -> Path:
    from workbench.config import get_settings

    root = Path(data_dir).expanduser() if data_dir is not None else get_settings().data_dir
    return root / name


def _already_here(
    name: str, data_dir: str | Path | None, checksums: Mapping[str, str] | None = None,
) -> tuple[dict[str, Path], str] | None:
    """The files of ``name`` found on this machine (a local directory, then the verified
    cache) without touching the network, with their source label; None if not here."""
    info = DATASETS[name]
    for directory in _local_dirs(name, data_dir):
        if (found := _find_local(directory, info.files)) is not None:
            return found, "local-dir"
    files = _with_checksums(info.files, checksums)
    cached = verified_cache(_cache_dir(name, data_dir), files)
    return (cached, "cache") if len(cached) == len(files) else None


def expected_train_samples(
    name: str, data_dir: str | Path | None = None, *, offline: bool | None = None,
) -> tuple[int, str]:
    """How many training images (before the validation split) a run on ``name`` reads now,
    and from where, without touching the network: files already here -> their count;
    offline, or a download that just failed -> the bundled subset; otherwise
    ``(info.train_size, "download")``: the full file, once downloaded. For predictions (the
    Build tab's epoch time), which must use the real count."""
    from workbench.config import get_settings

    key = canonical_name(name)
    info = DATASETS[key]
    if (here := _already_here(key, data_dir)) is not None:
        paths, source = here
    else:
        offline = get_settings().offline if offline is None else offline
        if not info.has_bundled_subset or not (offline or _known_unreachable(
                _mirror_urls(key, None))):
            return info.train_size, "download"
        paths, source = _bundled_paths(), "bundled-subset"
    _, shape = read_idx_header(paths["train_labels"])
    return int(shape[0]), source


def _bundled_paths() -> dict[str, Path]:
    return {role: BUNDLED_DIR / BUNDLED_FILES[role] for role in _ROLES}


def _mirror_urls(name: str, mirrors: Sequence[str] | None) -> tuple[str, ...]:
    from workbench.config import get_settings

    if mirrors is not None:
        return tuple(mirrors)
    return mnist_mirrors(get_settings().mnist_mirror) if name == "mnist" \
        else DATASETS[name].mirrors


def _known_unreachable(urls: tuple[str, ...]) -> str | None:
    """Why ``urls`` failed to connect in the last ``_UNREACHABLE_TTL_S`` s (None: not known)."""
    memo = _unreachable_until.get(urls)
    return memo[1] if memo and memo[0] > time.monotonic() else None


def _resolve(
    name: str,
    data_dir: str | Path | None,
    offline: bool | None,
    progress: bool,
    mirrors: Sequence[str] | None,
    checksums: Mapping[str, str] | None,
) -> tuple[dict[str, Path], str]:
    """Find (or fetch) the files for ``name``; returns their paths and the source label."""
    from workbench.config import get_settings

    settings = get_settings()
    info = DATASETS[name]
    offline = settings.offline if offline is None else offline
    if (here := _already_here(name, data_dir, checksums)) is not None:
        return here
    files = _with_checksums(info.files, checksums)
    cache_dir = _cache_dir(name, data_dir)
    local_dirs = _local_dirs(name, data_dir)

    urls = _mirror_urls(name, mirrors)
    reason: str
    if offline:
        reason = "offline mode"
    elif known := _known_unreachable(urls):
        reason = known
    else:
        try:
            result = fetch_all(files, cache_dir, urls, progress=progress)
            return result.paths, result.source
        except DownloadError as exc:
            reason = exc.reason
            if exc.unreachable:
                _unreachable_until[urls] = (time.monotonic() + _UNREACHABLE_TTL_S, reason)

    if info.has_bundled_subset:
        # One line, through logging: with no logging configured Python prints WARNINGs to stderr.
        log.warning(
            "workbench: %s download unavailable (%s); %s", info.title, reason, BUNDLED_NOTICE
        )
        return _bundled_paths(), "bundled-subset"

    tried = ", ".join(str(d) for d in local_dirs) or "(none)"
    raise DatasetUnavailableError(
        f"{info.title} is not available: no IDX files in {tried}, no verified cache in "
        f"{cache_dir}, and no download ({reason}). Install Debian's "
        f"dataset-fashion-mnist package, set WORKBENCH_FASHION_MNIST_DIR or pass data_dir= "
        f"pointing at the four IDX files, or go online."
    )


def _load_arrays(
    name: str,
    data_dir: str | Path | None,
    offline: bool | None,
    progress: bool,
    mirrors: Sequence[str] | None,
    checksums: Mapping[str, str] | None,
) -> tuple[_Arrays, str]:
    paths, source = _resolve(name, data_dir, offline, progress, mirrors, checksums)
    return _parse(_stamp(paths)), source


# --------------------------------------------------------------------------- public loaders


def load_raw(
    name: str = "mnist",
    *,
    data_dir: str | Path | None = None,
    offline: bool | None = None,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> RawData:
    """The data as stored (uint8 images, int64 labels) plus where it came from.

    ``mirrors`` / ``checksums`` (file name -> MD5) override the defaults, for private
    mirrors and tests. The tensors are fresh copies the caller may modify.
    """
    (x_train, y_train, x_test, y_test), source = _load_arrays(
        canonical_name(name), data_dir, offline, progress, mirrors, checksums
    )
    return RawData(
        torch.from_numpy(x_train.copy()),
        torch.from_numpy(y_train.astype(np.int64)),
        torch.from_numpy(x_test.copy()),
        torch.from_numpy(y_test.astype(np.int64)),
        source,
    )


def _normalization(normalize: object, info: DatasetInfo) -> tuple[bool, float, float]:
    """Parse ``normalize`` into (apply?, mean, std)."""
    if normalize is True:
        return True, info.mean, info.std
    if normalize is False or normalize is None:
        return False, 0.0, 1.0

    def scalar(value: object, what: str) -> float:
        # The distributed trainer passes mean=[0.1307], std=[0.3081] (per-channel lists).
        if isinstance(value, (list, tuple)) or (isinstance(value, torch.Tensor) and value.ndim):
            if len(value) != 1:
                raise ValueError(f"normalize {what} must be one number (1 channel), got {value!r}")
            value = value[0]
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"normalize {what} must be a number, got {value!r}") from None

    if isinstance(normalize, Mapping) and {"mean", "std"} <= set(normalize):
        pair = (normalize["mean"], normalize["std"])
    elif isinstance(normalize, (list, tuple)) and len(normalize) == 2:
        pair = tuple(normalize)
    else:
        raise ValueError(
            f"normalize must be True, False, (mean, std) or {{'mean': .., 'std': ..}}; got {normalize!r}"
        )
    mean, std = scalar(pair[0], "mean"), scalar(pair[1], "std")
    if not std > 0:
        raise ValueError(f"normalize std must be > 0, got {std}")
    return True, mean, std


def _to_features(images: torch.Tensor, apply: bool, mean: float, std: float) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 784): /255, then (x - mean) / std."""
    x = images.flatten(start_dim=1).to(torch.float32)  # flatten: also fine for 0 rows
    if not apply:
        return x.div_(255.0)
    # Fused into one multiply-add (x * a - b): same values to float32 rounding, one pass less.
    return x.mul_(1.0 / (255.0 * std)).sub_(mean / std)


def load_splits(
    name: str = "mnist",
    *,
    train_split: float = 0.9,
    seed: int = 42,
    normalize: bool | tuple[float, float] = True,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    offline: bool | None = None,
    progress: bool = True,
    limit: int | None = None,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
) -> Splits:
    """Load ``name`` as normalized train / validation / test tensors.

    - ``train_split`` in (0, 1]: share of the training file used for training; the rest,
      chosen by ``torch.randperm`` seeded with ``seed``, is the validation set (empty at 1.0).
    - ``normalize``: True -> the data set's usual mean/std; ``(mean, std)`` (numbers or
      1-element lists) -> those; False -> pixels scaled to [0, 1] only (mean 0, std 1 recorded).
    - ``limit``: keep only the first ``limit`` shuffled training examples (fast tests). The
      validation and test sets stay the same, so results remain comparable.
    - ``offline`` (default ``settings.offline``): never touch the network.
    - ``mirrors`` / ``checksums``: see :func:`load_raw`.
    """
    key = canonical_name(name)
    info = DATASETS[key]
    if not 0.0 < float(train_split) <= 1.0:
        raise ValueError(f"train_split must be in (0, 1], got {train_split}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of examples, got {limit}")
    apply, mean, std = _normalization(normalize, info)

    (x_all, y_all, x_test, y_test), source = _load_arrays(
        key, data_dir, offline, progress, mirrors, checksums
    )
    # from_numpy shares the cached arrays; indexing and casting below make new tensors.
    x_all_t, y_all_t = _tensor(x_all), _tensor(y_all)
    n = len(y_all_t)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = n if train_split >= 1.0 else min(max(round(n * train_split), 1), n - 1)
    train_idx, val_idx = perm[:n_train], perm[n_train:]
    if limit is not None:
        train_idx = train_idx[:limit]

    splits = Splits(
        name=key,
        source=source,
        x_train=_to_features(x_all_t[train_idx], apply, mean, std),
        y_train=y_all_t[train_idx].to(torch.int64),
        x_val=_to_features(x_all_t[val_idx], apply, mean, std),
        y_val=y_all_t[val_idx].to(torch.int64),
        x_test=_to_features(_tensor(x_test), apply, mean, std),
        y_test=_tensor(y_test).to(torch.int64),
        mean=mean,
        std=std,
        num_classes=len(info.classes),
        input_size=28 * 28,
    )
    return splits if torch.device(device).type == "cpu" else splits.to(device)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """Zero-copy view of a cached array; callers only read it (indexing/casting copies)."""
    return torch.from_numpy(array)
