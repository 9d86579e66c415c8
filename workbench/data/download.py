"""Download the MNIST / Fashion-MNIST IDX files into a verified cache, with only the stdlib.

Guarantees:

- A file under its final name in the cache has passed its checksum. Downloads go to a temp
  file in the same directory, are verified, then ``os.replace``-d into place, so an interrupted
  or corrupt download never shows up under the final name (and leaves no temp litter).
- A cached file is re-verified before it is trusted; a bad one is deleted and fetched again.
- An offline machine fails fast: short socket timeouts, no retries for "cannot connect" errors,
  and a mirror that could not be reached is not tried again for the remaining files.
- Transient failures (connection dropped mid-file, timeouts while reading, HTTP 5xx) are
  retried a few times with exponential backoff.

URLs and checksums are plain arguments, so tests (and private mirrors) can point elsewhere.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

__all__ = [
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_MIRRORS",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "ChecksumError",
    "DownloadError",
    "FetchResult",
    "RemoteFile",
    "download_fashion_mnist",
    "download_mnist",
    "fetch_all",
    "fetch_file",
    "file_md5",
    "mnist_mirrors",
    "verified_cache",
]

log = logging.getLogger("workbench.data")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name on the mirrors (and in the cache) and its MD5."""

    filename: str
    md5: str


# Roles are the keys every loader uses; the MD5s are those torchvision and the upstream
# projects publish for the original gzip files.
MNIST_FILES: dict[str, RemoteFile] = {
    "train_images": RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
FASHION_MNIST_FILES: dict[str, RemoteFile] = {
    "train_images": RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test_images": RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test_labels": RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)

DEFAULT_TIMEOUT = 3.0  # seconds per socket operation: an unreachable mirror costs at most this
DEFAULT_RETRIES = 3  # attempts per mirror for transient errors
DEFAULT_BACKOFF = 0.5  # seconds before the 2nd attempt, doubled after each failure
_CHUNK = 1 << 16
_USER_AGENT = "nn-workbench (python urllib)"
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}


class DownloadError(RuntimeError):
    """No mirror delivered a verified copy of a file. ``reason`` is a short one-line summary."""

    def __init__(self, message: str, reason: str | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason or message
        # True when no mirror could even be connected to: the machine is (probably) offline.
        self.unreachable = unreachable


class ChecksumError(DownloadError):
    """A file arrived complete but its MD5 does not match the expected one."""


@dataclass
class FetchResult:
    """Where the files are, and whether any of them had to be downloaded (vs. all cached)."""

    paths: dict[str, Path]
    downloaded: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return "download" if self.downloaded else "cache"


# --------------------------------------------------------------------------- checksums


@lru_cache(maxsize=64)
def _md5_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_md5(path: str | os.PathLike[str]) -> str:
    """MD5 of a file; memoized on (path, size, mtime) so re-verifying a cache is ~free."""
    st = os.stat(path)
    return _md5_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


def verified_cache(
    dest_dir: str | os.PathLike[str], files: Mapping[str, RemoteFile]
) -> dict[str, Path]:
    """Return the cached files that pass their checksum; delete the ones that do not."""
    good: dict[str, Path] = {}
    for role, remote in files.items():
        path = Path(dest_dir) / remote.filename
        if not path.is_file():
            continue
        if file_md5(path) == remote.md5.lower():
            good[role] = path
        else:
            log.info("workbench: cached %s fails its checksum; deleting it", path)
            path.unlink(missing_ok=True)
    return good


# --------------------------------------------------------------------------- progress


class _LineProgress:
    """Fallback progress display when tqdm is not installed: one rewritten stderr line."""

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc, self.n, self._last = total, desc, 0, 0.0

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= 0.25:  # throttle: redrawing per 64 KiB chunk is wasteful
            self._last = now
            self._draw()

    def _draw(self) -> None:
        done = f"{self.n / 1e6:.1f} MB"
        if self.total:
            done += f" / {self.total / 1e6:.1f} MB ({100 * self.n / self.total:.0f}%)"
        sys.stderr.write(f"\r{self.desc}: {done}")
        sys.stderr.flush()

    def close(self) -> None:
        self._draw()
        sys.stderr.write("\n")
        sys.stderr.flush()


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, total: int | None, desc: str) -> Any:
    if not enabled:
        return _NoProgress()
    try:
        # Plain tqdm, not tqdm.auto: the notebook variant raises without ipywidgets installed.
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: the core must run on a bare torch+numpy box
        return _LineProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False)


# --------------------------------------------------------------------------- one attempt


class _Transient(Exception):
    """Worth retrying on the same mirror (dropped connection, read timeout, HTTP 5xx)."""


class _Unreachable(Exception):
    """Could not connect at all (DNS, refused, no route, connect timeout): skip the mirror."""


class _Permanent(Exception):
    """This mirror will not serve this file (HTTP 4xx, TLS failure): try the next mirror."""


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1"):
        # A proxy from the environment must not intercept a local mirror (tests, LAN caches).
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return opener.open(request, timeout=timeout)
    return urllib.request.urlopen(request, timeout=timeout)


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(reason, BaseException):
        exc = reason
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text


def _classify_open_error(exc: BaseException) -> Exception:
    if isinstance(exc, urllib.error.HTTPError):
        if exc.code >= 500 or exc.code in (408, 429):
            return _Transient(_describe(exc))
        return _Permanent(_describe(exc))
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError)):
        return _Unreachable(_describe(exc))
    if isinstance(reason, OSError) and reason.errno in _NO_ROUTE:
        return _Unreachable(_describe(exc))
    if isinstance(reason, (ConnectionError, http.client.HTTPException)):
        return _Transient(_describe(exc))
    return _Permanent(_describe(exc))


def _max_download_bytes() -> int:
    from workbench.config import get_settings

    return get_settings().limits.max_download_bytes


def _attempt(url: str, out: IO[bytes], timeout: float, progress: bool, desc: str,
             max_bytes: int | None = None) -> str:
    """Stream ``url`` into ``out`` (a temp file on disk, never memory); return the MD5 of
    what was written. More than ``max_bytes`` (default ``limits.max_download_bytes``) is a
    permanent failure of this mirror."""
    cap = max_bytes if max_bytes is not None else _max_download_bytes()
    try:
        response = _open(url, timeout)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _classify_open_error(exc) from exc
    h = hashlib.md5(usedforsecurity=False)
    received = 0
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and total > cap:
            raise _Permanent(f"{total} bytes is over the download limit of {cap} bytes "
                             "(WORKBENCH_MAX_DOWNLOAD_BYTES)")
        bar = _progress(progress, total, desc)
        try:
            while chunk := response.read(_CHUNK):
                if received + len(chunk) > cap:
                    raise _Permanent(f"more than the download limit of {cap} bytes "
                                     "(WORKBENCH_MAX_DOWNLOAD_BYTES)")
                out.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
            raise _Transient(
                f"connection dropped after {received} bytes ({_describe(exc)})"
            ) from exc
        finally:
            bar.close()
    # http.client quietly returns b"" when the peer closes early, so check the length ourselves.
    if total is not None and received != total:
        raise _Transient(f"connection dropped after {received} of {total} bytes")
    return h.hexdigest()


# --------------------------------------------------------------------------- public API


def fetch_file(
    remote: RemoteFile,
    dest_dir: str | os.PathLike[str],
    mirrors: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    progress: bool = True,
    _dead: set[str] | None = None,
) -> tuple[Path, bool]:
    """Return ``(path, downloaded)`` for a verified copy of ``remote`` in ``dest_dir``.

    A verified cached copy is returned without touching the network. Otherwise each mirror is
    tried in order (``retries`` attempts each for transient errors). Raises
    :class:`ChecksumError` if a mirror delivered a complete file with the wrong MD5, else
    :class:`DownloadError` (``.unreachable`` is True when no mirror could be connected to).
    """
    dest_dir = Path(dest_dir)
    final = dest_dir / remote.filename
    if verified_cache(dest_dir, {"file": remote}):
        return final, False
    if not mirrors:
        raise DownloadError(f"{remote.filename}: no mirrors to download from", "no mirrors")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dead = _dead if _dead is not None else set()
    failures: list[str] = []
    checksum_failures = 0
    last_reason = "no mirror reachable"

    for base in mirrors:
        url = urllib.parse.urljoin(base if base.endswith("/") else base + "/", remote.filename)
        if base in dead:
            failures.append(f"{url}: skipped (unreachable earlier)")
            continue
        for attempt in range(1, max(1, retries) + 1):
            fd, tmp_name = tempfile.mkstemp(
                dir=dest_dir, prefix=f".{remote.filename}.", suffix=".part"
            )
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    digest = _attempt(url, out, timeout, progress, remote.filename)
                if digest != remote.md5.lower():
                    checksum_failures += 1
                    last_reason = f"checksum mismatch for {remote.filename}"
                    failures.append(f"{url}: MD5 {digest} != expected {remote.md5}")
                    break  # a complete-but-wrong file will not improve on retry: next mirror
                os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a shared cache must be readable
                os.replace(tmp, final)  # atomic: the final name only ever holds verified bytes
                return final, True
            except _Unreachable as exc:
                dead.add(base)
                last_reason = f"network unreachable: {exc}"
                failures.append(f"{url}: unreachable ({exc})")
                break
            except _Permanent as exc:
                last_reason = f"{remote.filename}: {exc}"
                failures.append(f"{url}: {exc}")
                break
            except _Transient as exc:
                last_reason = f"{remote.filename}: {exc}"
                failures.append(f"{url} (attempt {attempt}/{retries}): {exc}")
                if attempt < retries:
                    time.sleep(backoff * 2 ** (attempt - 1))
            finally:
                tmp.unlink(missing_ok=True)  # no-op after os.replace; cleans up every failure

    detail = "; ".join(failures)
    if checksum_failures:  # some mirror sent a complete file with the wrong content
        raise ChecksumError(f"could not get a verified {remote.filename}: {detail}", last_reason)
    unreachable = all(base in dead for base in mirrors)
    raise DownloadError(f"could not download {remote.filename}: {detail}", last_reason, unreachable)


def fetch_all(
    files: Mapping[str, RemoteFile] | Iterable[RemoteFile],
    dest_dir: str | os.PathLike[str],
    mirrors: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    progress: bool = True,
) -> FetchResult:
    """Fetch (or find cached) every file; stops at the first file no mirror could deliver."""
    if not isinstance(files, Mapping):
        files = {remote.filename: remote for remote in files}
    result = FetchResult(paths={})
    dead: set[str] = set()  # shared so an unreachable mirror costs one timeout, not four
    for role, remote in files.items():
        path, downloaded = fetch_file(
            remote,
            dest_dir,
            mirrors,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            progress=progress,
            _dead=dead,
        )
        result.paths[role] = path
        if downloaded:
            result.downloaded.append(role)
    return result


def mnist_mirrors(extra: str | None = None) -> tuple[str, ...]:
    """The MNIST mirror list: ``extra`` (e.g. ``settings.mnist_mirror``) first, then public ones."""
    return ((extra,) if extra else ()) + MNIST_MIRRORS


def download_mnist(
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
) -> FetchResult:
    """Fetch the four MNIST files into ``dest_dir`` (default ``settings.data_dir / "mnist"``).

    ``mirrors`` defaults to ``settings.mnist_mirror`` then the public mirrors; ``checksums``
    maps file names to MD5s and overrides the published ones (tests, re-packed mirrors).
    """
    from workbench.config import get_settings

    settings = get_settings()
    return fetch_all(
        _with_checksums(MNIST_FILES, checksums),
        Path(dest_dir) if dest_dir is not None else settings.data_dir / "mnist",
        list(mirrors) if mirrors is not None else mnist_mirrors(settings.mnist_mirror),
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        progress=progress,
    )


def download_fashion_mnist(
    dest_dir: str | os.PathLike[str] | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
) -> FetchResult:
    """Fetch the four Fashion-MNIST files (default ``settings.data_dir / "fashion-mnist"``)."""
    from workbench.config import get_settings

    return fetch_all(
        _with_checksums(FASHION_MNIST_FILES, checksums),
        Path(dest_dir) if dest_dir is not None else get_settings().data_dir / "fashion-mnist",
        list(mirrors) if mirrors is not None else FASHION_MNIST_MIRRORS,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
        progress=progress,
    )


def _with_checksums(
    files: Mapping[str, RemoteFile], checksums: Mapping[str, str] | None
) -> dict[str, RemoteFile]:
    if not checksums:
        return dict(files)
    known = {remote.filename for remote in files.values()}
    if unknown := set(checksums) - known:
        raise ValueError(f"checksums for unknown files {sorted(unknown)}; known: {sorted(known)}")
    return {
        role: RemoteFile(remote.filename, checksums.get(remote.filename, remote.md5))
        for role, remote in files.items()
    }
