"""Training data from a URL (fine-tuning): ``file://`` or ``http(s)://``, IDX or ``.npz``.

    splits = load_url_splits("file:///data/digits.npz", train_split=0.8, seed=42)

Two layouts:

- ``.npz`` (the URL path ends in ``.npz``): arrays ``x_train``, ``y_train`` (or ``x``, ``y``) and
  optionally ``x_test``, ``y_test``.
- IDX: the URL names a directory (trailing ``/`` optional) holding the MNIST file names,
  ``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte[.gz]``, optionally
  ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.

Images as ``uint8`` pixels (``(N, 28, 28)`` or ``(N, 784)``) are scaled and standardised with
MNIST's mean/std, the space the workbench's models are trained and served in; floating-point
arrays are taken as features already in that space. The validation set is the seeded
``1 - train_split`` share of the training data; without test arrays the test set is the
validation set. ``http(s)`` fetches use a 30 s socket timeout; with ``WORKBENCH_OFFLINE=1`` only
loopback hosts are fetched.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch

from workbench.data.datasets import DATASETS, Splits
from workbench.data.idx import read_idx

__all__ = ["file_path", "load_url_splits"]

_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}
_MAX_BYTES = 1 << 30  # 1 GiB: far above MNIST (~55 MB), below "fill the disk"
_TIMEOUT_S = 30.0
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def file_path(url: str) -> Path:
    """The local path of a ``file://`` URL (FileNotFoundError if it does not exist)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "file":
        raise ValueError(f"not a file:// URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file:// URLs must name a local path, got host {parts.netloc!r}")
    path = Path(urllib.request.url2pathname(parts.path))
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    return path


def _fetch(url: str, *, required: bool = True) -> bytes | None:
    """The bytes at ``url`` (None for a missing optional file)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        try:
            path = file_path(url)
        except FileNotFoundError:
            if required:
                raise
            return None
        return path.read_bytes()
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}: use file://, http:// or https://")
    from workbench.config import get_settings

    host = parts.hostname or ""
    if get_settings().offline and host not in _LOOPBACK:
        raise ConnectionError(f"offline mode (WORKBENCH_OFFLINE=1): not fetching {url}")
    handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url), timeout=_TIMEOUT_S) as response:
            data = response.read(_MAX_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and not required:
            return None
        raise ConnectionError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if len(data) > _MAX_BYTES:
        raise ValueError(f"{url}: larger than {_MAX_BYTES} bytes")
    return data


def _load_npz(url: str) -> dict[str, np.ndarray]:
    data = _fetch(url)
    assert data is not None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{url}: not a readable .npz file ({exc})") from None
    if "x_train" not in arrays and "x" in arrays:
        arrays["x_train"] = arrays.pop("x")
        if "y" in arrays:
            arrays["y_train"] = arrays.pop("y")
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise ValueError(f"{url}: the .npz needs arrays x_train and y_train (or x and y); "
                         f"missing {', '.join(missing)}; found {', '.join(sorted(arrays))}")
    return arrays


def _load_idx(url: str) -> dict[str, np.ndarray]:
    base = url if url.endswith("/") else url + "/"
    arrays: dict[str, np.ndarray] = {}
    for key, name in _IDX_NAMES.items():
        required = key.endswith("_train")
        for candidate in (name + ".gz", name):
            blob = _fetch(urllib.parse.urljoin(base, candidate), required=False)
            if blob is not None:
                arrays[key] = read_idx(blob, name=candidate)
                break
        else:
            if required:
                raise FileNotFoundError(f"{base}: no {name}[.gz] there (IDX data needs the MNIST "
                                        "file names)")
    return arrays


def _features(x: np.ndarray, what: str) -> torch.Tensor:
    """(N, 28, 28) or (N, 784) -> float32 (N, 784) in the standardised MNIST space."""
    if x.ndim == 3:
        x = x.reshape(len(x), -1)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected images of shape (N, 28, 28) or (N, 784), got {x.shape}")
    if x.dtype == np.uint8:
        info = DATASETS["mnist"]
        return torch.from_numpy(((x.astype(np.float32) / 255.0 - info.mean) / info.std)
                                .astype(np.float32))
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what}: expected uint8 pixels or floating-point features, got {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: contains non-finite values")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _labels(y: np.ndarray, n: int, what: str, num_classes: int = 10) -> torch.Tensor:
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise ValueError(f"{what}: {len(y)} labels for {n} samples")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{what}: labels must be integers, got {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{what}: labels must be in 0..{num_classes - 1}, found "
                         f"{int(y.min())}..{int(y.max())}")
    return torch.from_numpy(y.astype(np.int64))


def load_url_splits(url: str, *, train_split: float = 0.9, seed: int = 42) -> Splits:
    """Train / validation / test ``Splits`` from ``url`` (see the module docstring)."""
    if not 0.0 < float(train_split) <= 1.0:
        raise ValueError(f"train_split must be in (0, 1], got {train_split}")
    path = urllib.parse.urlsplit(url).path
    arrays = _load_npz(url) if path.endswith(".npz") else _load_idx(url)
    x_all = _features(arrays["x_train"], "x_train")
    y_all = _labels(arrays["y_train"], len(x_all), "y_train")
    n = len(y_all)
    if n < 1:
        raise ValueError(f"{url}: no training samples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = n if train_split >= 1.0 or n < 2 else min(max(round(n * train_split), 1), n - 1)
    train_idx, val_idx = perm[:n_train], perm[n_train:]
    if "x_test" in arrays and "y_test" in arrays:
        x_test = _features(arrays["x_test"], "x_test")
        y_test = _labels(arrays["y_test"], len(x_test), "y_test")
    else:
        x_test, y_test = x_all[val_idx], y_all[val_idx]
    info = DATASETS["mnist"]
    return Splits(
        name="mnist", source=f"url:{url}",
        x_train=x_all[train_idx], y_train=y_all[train_idx],
        x_val=x_all[val_idx], y_val=y_all[val_idx], x_test=x_test, y_test=y_test,
        mean=info.mean, std=info.std, num_classes=10, input_size=int(x_all.shape[1]),
    )
