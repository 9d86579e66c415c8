"""Training data from a URL (fine-tuning): ``file://`` or ``http(s)://``, IDX or ``.npz``.

    shape = probe_url("file:///home/me/.workbench/data/digits.npz")   # at submit: cheap
    splits = load_url_splits("file:///home/me/.workbench/data/digits.npz", train_split=0.8)

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
validation set.

Where data may come from is ``workbench.outbound``'s policy: ``file://`` only under the data roots
(``WORKBENCH_DATA_ROOTS``), ``http(s)://`` only to allowed hosts (``WORKBENCH_ALLOWED_HOSTS``),
redirects re-checked. Refusals and failures are :class:`DataUrlError` with one message per kind
("... not allowed", "could not fetch ..."), whether the target is missing, forbidden, refusing
connections or timing out. Downloads stream to a temporary file on disk (at most
``limits.max_download_bytes``); every array's declared size is checked against
``limits.max_decompressed_bytes`` before it is decompressed or read. ``http(s)`` fetches use a
30 s socket timeout; with ``WORKBENCH_OFFLINE=1`` only loopback hosts are fetched.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench import outbound
from workbench.data.datasets import DATASETS, Splits
from workbench.data.idx import read_idx, read_idx_header

__all__ = ["DataShape", "DataUrlError", "load_url_splits", "probe_url"]

log = logging.getLogger("workbench.data")

_IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte",
}
_TIMEOUT_S = 30.0
_CHUNK = 1 << 16
_HEADER_PREFIX = 1 << 16  # bytes of an IDX file enough to read its header, gzip or not


class DataUrlError(ValueError):
    """A data URL that is refused or unusable; the message is safe to show to the caller."""


@dataclass(frozen=True)
class DataShape:
    """What a data URL holds, from its headers alone."""

    samples: int
    features: int


def _limits() -> Any:
    from workbench.config import get_settings

    return get_settings().limits


def _could_not_fetch(url: str) -> DataUrlError:
    # One message for 404, refused, timeout, DNS, TLS...: nothing to tell them apart by.
    return DataUrlError(f"{outbound.FETCH_FAILED} {url}")


# ---- where the bytes come from -------------------------------------------------------------
def _local(url: str) -> Path:
    try:
        return outbound.data_path(url)
    except outbound.OutboundRefused as exc:
        raise DataUrlError(str(exc)) from None


def _open(url: str) -> Any:
    """An open response for an allowed http(s) URL (DataUrlError otherwise)."""
    try:
        parts = outbound.check_url(url)
    except outbound.OutboundRefused as exc:
        raise DataUrlError(str(exc)) from None
    from workbench.config import get_settings

    if get_settings().offline and not outbound.is_loopback(parts.hostname or ""):
        raise DataUrlError(f"offline mode (WORKBENCH_OFFLINE=1): not fetching {url}")
    try:
        return outbound.opener(url).open(urllib.request.Request(url), timeout=_TIMEOUT_S)
    except outbound.OutboundRefused:  # a redirect to a host that is not allowed
        raise _could_not_fetch(url) from None
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            raise FileNotFoundError(url) from None
        raise _could_not_fetch(url) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        log.info("fetching %s failed: %s", url, exc)
        raise _could_not_fetch(url) from None


def _download(url: str, directory: str, *, missing_ok: bool = False) -> Path | None:
    """Stream ``url`` into a file in ``directory``, at most ``max_download_bytes``; None for
    a file the server does not have when ``missing_ok``."""
    cap = _limits().max_download_bytes
    try:
        response = _open(url)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise _could_not_fetch(url) from None
    too_big = DataUrlError(f"{url}: larger than the download limit of {cap} bytes "
                           "(WORKBENCH_MAX_DOWNLOAD_BYTES)")
    target = Path(directory) / "download"
    received = 0
    with response, open(target, "wb") as out:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > cap:
            raise too_big
        try:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > cap:
                    raise too_big
                out.write(chunk)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if isinstance(exc, DataUrlError):
                raise
            log.info("reading %s failed after %d bytes: %s", url, received, exc)
            raise _could_not_fetch(url) from None
    return target


def _prefix(url: str) -> bytes | None:
    """The first bytes of an http(s) file (None when the server has no such file)."""
    try:
        response = _open(url)
    except FileNotFoundError:
        return None
    with response:
        try:
            return response.read(_HEADER_PREFIX)
        except (OSError, ValueError, http.client.HTTPException):
            raise _could_not_fetch(url) from None


@contextlib.contextmanager
def _materialized(url: str) -> Iterator[Path]:
    """A local path holding the bytes of ``url``: the file itself for file://, else a
    temporary download removed afterwards."""
    if urllib.parse.urlsplit(url).scheme == "file":
        local = _local(url)
        if not local.is_file():
            raise DataUrlError(outbound.FILE_REFUSED)
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="workbench-data-") as directory:
        downloaded = _download(url, directory)
        assert downloaded is not None
        yield downloaded


def _scheme(url: str) -> str:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("file", "http", "https"):
        raise DataUrlError(f"unsupported URL scheme {scheme!r}: use file://, http:// or https://")
    return scheme


# ---- .npz --------------------------------------------------------------------------------
def _npz_members(zf: zipfile.ZipFile, url: str) -> dict[str, tuple[zipfile.ZipInfo, tuple, Any]]:
    """{array name: (zip entry, shape, dtype)} from the .npy headers, each array's size
    checked against the limit before anything is decompressed."""
    cap = _limits().max_decompressed_bytes
    members = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        key = info.filename[: -len(".npy")]
        if info.file_size > cap:
            raise DataUrlError(f"{url}: array {key} is {info.file_size} bytes uncompressed, over "
                               f"the limit of {cap} bytes (WORKBENCH_MAX_DECOMPRESSED_BYTES)")
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        if dtype.hasobject:
            raise DataUrlError(f"{url}: array {key} holds Python objects; only numeric arrays "
                               "are read")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if nbytes > cap:
            raise DataUrlError(f"{url}: array {key} of shape {tuple(shape)} is {nbytes} bytes, "
                               f"over the limit of {cap} bytes (WORKBENCH_MAX_DECOMPRESSED_BYTES)")
        members[key] = (info, tuple(shape), dtype)
    for plain, named in (("x", "x_train"), ("y", "y_train")):
        if named not in members and plain in members:
            members[named] = members.pop(plain)
    missing = [k for k in ("x_train", "y_train") if k not in members]
    if missing:
        raise DataUrlError(f"{url}: the .npz needs arrays x_train and y_train (or x and y); "
                           f"missing {', '.join(missing)}; found {', '.join(sorted(members))}")
    return members


def _open_zip(path: Path, url: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataUrlError(f"{url}: not a readable .npz file ({exc})") from None


def _npz_shape(path: Path, url: str) -> DataShape:
    with _open_zip(path, url) as zf:
        try:
            members = _npz_members(zf, url)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            if isinstance(exc, DataUrlError):
                raise
            raise DataUrlError(f"{url}: not a readable .npz file ({exc})") from None
    _, x_shape, x_dtype = members["x_train"]
    _check_declared(f"{url}: x_train", x_shape, x_dtype.itemsize)
    return _shape_of(x_shape, members["y_train"][1], url)


def _load_npz(url: str) -> dict[str, np.ndarray]:
    with _materialized(url) as path, _open_zip(path, url) as zf:
        try:
            members = _npz_members(zf, url)
            arrays = {}
            for key, (info, _, _) in members.items():
                with zf.open(info) as fh:
                    arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            if isinstance(exc, DataUrlError):
                raise
            raise DataUrlError(f"{url}: not a readable .npz file ({exc})") from None
    return arrays


# ---- IDX directories ---------------------------------------------------------------------
def _idx_candidates(url: str, key: str) -> list[str]:
    base = url if url.endswith("/") else url + "/"
    name = _IDX_NAMES[key]
    return [urllib.parse.urljoin(base, candidate) for candidate in (name + ".gz", name)]


def _local_file(url: str) -> Path | None:
    """The path of a file:// IDX file inside the data roots (None if absent or escaping)."""
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
    if not path.is_file() or not outbound.within_roots(path):
        return None
    return path


def _idx_missing(url: str, key: str) -> DataUrlError:
    base = url if url.endswith("/") else url + "/"
    if urllib.parse.urlsplit(url).scheme != "file":
        return _could_not_fetch(base + _IDX_NAMES[key] + "[.gz]")
    return DataUrlError(f"{base}: no {_IDX_NAMES[key]}[.gz] there (IDX data needs the MNIST "
                        "file names)")


def _idx_header(url: str, key: str) -> tuple[np.dtype, tuple[int, ...]] | None:
    for candidate in _idx_candidates(url, key):
        blob: Path | bytes | None
        if urllib.parse.urlsplit(candidate).scheme == "file":
            blob = _local_file(candidate)
        else:
            blob = _prefix(candidate)
        if blob is None:
            continue
        label = candidate.rsplit("/", 1)[-1]
        try:
            dtype, dims = read_idx_header(blob, name=label)
        except ValueError as exc:
            raise DataUrlError(f"{url}: {exc}") from None
        _check_declared(f"{url}: {label}", dims, dtype.itemsize)
        return dtype, dims
    return None


def _check_declared(what: str, shape: tuple, itemsize: int) -> None:
    """The size a header declares, as stored and as float32 features, within the limit."""
    cap = _limits().max_decompressed_bytes
    count = int(np.prod(shape, dtype=object))
    need = count * max(itemsize, 4)
    if need > cap:
        raise DataUrlError(f"{what}: shape {tuple(shape)} needs {need} bytes, over the limit of "
                           f"{cap} bytes (WORKBENCH_MAX_DECOMPRESSED_BYTES)")


def _load_idx(url: str) -> dict[str, np.ndarray]:
    if urllib.parse.urlsplit(url).scheme == "file":
        _local(url)  # the directory itself: inside the roots
    arrays: dict[str, np.ndarray] = {}
    for key in _IDX_NAMES:
        required = key.endswith("_train")
        for candidate in _idx_candidates(url, key):
            label = candidate.rsplit("/", 1)[-1]
            if urllib.parse.urlsplit(candidate).scheme == "file":
                path = _local_file(candidate)
                if path is None:
                    continue
                arrays[key] = read_idx(path, name=label)
                break
            with tempfile.TemporaryDirectory(prefix="workbench-data-") as directory:
                downloaded = _download(candidate, directory, missing_ok=True)
                if downloaded is None:
                    continue
                arrays[key] = read_idx(downloaded, name=label)
                break
        else:
            if required:
                raise _idx_missing(url, key)
    return arrays


def _shape_of(x_shape: tuple, y_shape: tuple, url: str) -> DataShape:
    if len(x_shape) not in (2, 3):
        raise DataUrlError(f"{url}: x_train: expected images of shape (N, 28, 28) or (N, 784), "
                           f"got {x_shape}")
    n = int(x_shape[0])
    labels = int(np.prod(y_shape, dtype=object)) if y_shape else 1
    if labels != n:
        raise DataUrlError(f"{url}: y_train: {labels} labels for {n} samples")
    return DataShape(samples=n, features=int(np.prod(x_shape[1:], dtype=object)))


def probe_url(url: str) -> DataShape:
    """Check a data URL at submit time: allowed, reachable, and its training arrays' shapes,
    read from headers only (an http(s) .npz is downloaded, within the limit, and removed).
    Raises :class:`DataUrlError`."""
    _scheme(url)
    if urllib.parse.urlsplit(url).path.endswith(".npz"):
        with _materialized(url) as path:
            return _npz_shape(path, url)
    if urllib.parse.urlsplit(url).scheme == "file":
        _local(url)
    x = _idx_header(url, "x_train")
    if x is None:
        raise _idx_missing(url, "x_train")
    y = _idx_header(url, "y_train")
    if y is None:
        raise _idx_missing(url, "y_train")
    return _shape_of(x[1], y[1], url)


# ---- arrays -> tensors ------------------------------------------------------------------------
def _features(x: np.ndarray, what: str) -> torch.Tensor:
    """(N, 28, 28) or (N, 784) -> float32 (N, 784) in the standardised MNIST space."""
    if x.ndim == 3:
        x = x.reshape(len(x), -1)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected images of shape (N, 28, 28) or (N, 784), got {x.shape}")
    cap = _limits().max_decompressed_bytes
    if x.size * 4 > cap:
        raise DataUrlError(f"{what}: {x.shape} as float32 features is {x.size * 4} bytes, over "
                           f"the limit of {cap} bytes (WORKBENCH_MAX_DECOMPRESSED_BYTES)")
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
    _scheme(url)
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
