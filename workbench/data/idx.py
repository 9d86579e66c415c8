"""Read and write the IDX format used by the MNIST family of data sets.

Layout (all integers big-endian)::

    byte 0-1   zero
    byte 2     dtype code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64)
    byte 3     number of dimensions D
    D x uint32 size of each dimension
    ...        the data, row-major

Files are often gzip-compressed; :func:`read_idx` detects that by the gzip magic bytes rather
than the file name, because caches and mirrors do not always keep the ``.gz`` suffix.
"""

from __future__ import annotations

import gzip as _gzip
import io
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

__all__ = ["IDX_DTYPES", "read_idx", "read_idx_header", "write_idx"]

# dtype code -> big-endian numpy dtype, as defined by the format's authors.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES: dict[tuple[str, int], int] = {
    (dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()
}
_GZIP_MAGIC = b"\x1f\x8b"


class _Source:
    """An open binary stream over the (possibly gzip-compressed) IDX bytes, and a label."""

    def __init__(self, source: str | os.PathLike[str] | bytes | bytearray | memoryview,
                 name: str | None):
        self.size: int | None = None  # bytes of the raw stream, when known and uncompressed
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.raw: IO[bytes] = io.BytesIO(bytes(source))
            label = "<bytes>"
        else:
            path = Path(source)
            try:
                self.raw = open(path, "rb")  # noqa: SIM115 - closed by close()
            except FileNotFoundError:
                raise FileNotFoundError(f"IDX file not found: {path}") from None
            label = str(path)
        self.label = name or label
        magic = self.raw.read(2)
        self.raw.seek(0)
        self.gzip = magic == _GZIP_MAGIC
        if self.gzip:
            self.stream: IO[bytes] = _gzip.GzipFile(  # type: ignore[assignment]
                fileobj=self.raw, mode="rb")
        else:
            self.stream = self.raw
            self.raw.seek(0, os.SEEK_END)
            self.size = self.raw.tell()
            self.raw.seek(0)

    def read(self, n: int) -> bytes:
        try:
            return self.stream.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            # EOFError: the gzip stream stops early (an interrupted download).
            raise ValueError(f"{self.label}: corrupt or truncated gzip stream ({exc})") from None

    def readinto(self, view: memoryview) -> int:
        done = 0
        while done < len(view):
            try:
                n = self.stream.readinto(view[done:])  # type: ignore[attr-defined]
            except (OSError, EOFError, zlib.error) as exc:
                raise ValueError(
                    f"{self.label}: corrupt or truncated gzip stream ({exc})") from None
            if not n:
                break
            done += n
        return done

    def close(self) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


def _max_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return max_bytes
    from workbench.config import get_settings

    return get_settings().limits.max_decompressed_bytes


def _header(src: _Source) -> tuple[int, tuple[int, ...]]:
    """(dtype code, dims) from the stream's IDX header."""
    label = src.label
    head = src.read(4)
    if len(head) < 4:
        raise ValueError(
            f"{label}: not an IDX file (only {len(head)} bytes, need a 4-byte header)")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0 or code not in IDX_DTYPES:
        raise ValueError(
            f"{label}: not an IDX file (bad magic number 0x{head.hex()}; expected 0x0000 "
            f"followed by a dtype code in {[hex(c) for c in IDX_DTYPES]} and a dimension "
            "count)"
        )
    if ndim == 0:
        raise ValueError(f"{label}: IDX header declares zero dimensions")
    header_len = 4 + 4 * ndim
    dims_raw = src.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValueError(f"{label}: truncated IDX header ({4 + len(dims_raw)} bytes, need "
                         f"{header_len} for {ndim} dims)")
    return code, struct.unpack(f">{ndim}I", dims_raw)


def read_idx_header(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None,
) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) an IDX file declares, reading only its header (a prefix of the file's
    bytes is enough, gzip or not)."""
    src = _Source(source, name)
    try:
        code, dims = _header(src)
    finally:
        src.close()
    return IDX_DTYPES[code].newbyteorder("="), dims


def read_idx(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """Parse an IDX file (raw or gzip) from a path or bytes into a native-endian numpy array.

    The array is writable and owns its memory (``torch.from_numpy`` warns on read-only ones).
    Raises ``ValueError`` naming the file and what is wrong for truncated or garbage input.

    Decompression is streamed: the header is read first and its declared size checked against
    ``max_bytes`` (default ``settings.limits.max_decompressed_bytes``) before any data is read,
    so a small gzip bomb costs at most that many bytes, never its inflated size.
    """
    src = _Source(source, name)
    label = src.label
    try:
        code, dims = _header(src)
        header_len = 4 + 4 * len(dims)
        dtype = IDX_DTYPES[code]
        expected = int(np.prod(dims, dtype=object)) * dtype.itemsize
        if src.size is not None:  # uncompressed: the length is known before reading
            actual = src.size - header_len
            if actual < expected:
                raise ValueError(f"{label}: truncated IDX data (shape {dims} of {dtype.name} "
                                 f"needs {expected} bytes, found {actual})")
            if actual > expected:
                raise ValueError(f"{label}: {actual - expected} unexpected trailing bytes after "
                                 f"IDX data of shape {dims}")
        limit = _max_bytes(max_bytes)
        if expected > limit:
            raise ValueError(f"{label}: IDX data of shape {dims} is {expected} bytes, over the "
                             f"limit of {limit} bytes (WORKBENCH_MAX_DECOMPRESSED_BYTES)")
        array = np.empty(dims, dtype=dtype.newbyteorder("="))
        got = src.readinto(memoryview(array.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
        if got < expected:
            raise ValueError(f"{label}: truncated IDX data (shape {dims} of {dtype.name} needs "
                             f"{expected} bytes, found {got})")
        if src.size is None and src.read(1):
            raise ValueError(f"{label}: unexpected trailing bytes after IDX data of shape {dims}")
    finally:
        src.close()
    if dtype.itemsize > 1 and not dtype.isnative:
        array.byteswap(inplace=True)  # big-endian bytes read into a native array
    return array


def write_idx(path: str | os.PathLike[str], array: np.ndarray, gzip: bool = True) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed by default), atomically.

    The gzip header's timestamp is fixed to 0 so the same array always gives the same bytes
    (the bundled subset must be reproducible byte for byte).
    """
    array = np.asarray(array)
    code = _CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"dtype {array.dtype} has no IDX code; use one of "
            f"{sorted({dt.newbyteorder('=').name for dt in IDX_DTYPES.values()})}"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if gzip:
        payload = _gzip.compress(payload, compresslevel=9, mtime=0)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temp file in the same directory + os.replace: readers never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; package data must be world-readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
