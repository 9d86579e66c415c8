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
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDX_DTYPES", "read_idx", "write_idx"]

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


def _load_bytes(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
) -> tuple[bytes, str]:
    """Return the raw (possibly compressed) bytes and a label to name them in errors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    path = Path(source)
    try:
        return path.read_bytes(), str(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file not found: {path}") from None


def read_idx(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview, *, name: str | None = None
) -> np.ndarray:
    """Parse an IDX file (raw or gzip) from a path or bytes into a native-endian numpy array.

    The array is writable and owns its memory (``torch.from_numpy`` warns on read-only ones).
    Raises ``ValueError`` naming the file and what is wrong for truncated or garbage input.
    """
    data, label = _load_bytes(source)
    label = name or label
    if data[:2] == _GZIP_MAGIC:
        try:
            data = _gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            # EOFError: the gzip stream stops early (an interrupted download).
            raise ValueError(f"{label}: corrupt or truncated gzip stream ({exc})") from None

    if len(data) < 4:
        raise ValueError(f"{label}: not an IDX file (only {len(data)} bytes, need a 4-byte header)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in IDX_DTYPES:
        raise ValueError(
            f"{label}: not an IDX file (bad magic number 0x{data[:4].hex()}; expected 0x0000 "
            f"followed by a dtype code in {[hex(c) for c in IDX_DTYPES]} and a dimension count)"
        )
    if ndim == 0:
        raise ValueError(f"{label}: IDX header declares zero dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(
            f"{label}: truncated IDX header ({len(data)} bytes, need {header_len} for {ndim} dims)"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise ValueError(
            f"{label}: truncated IDX data (shape {dims} of {dtype.name} needs {expected} bytes, "
            f"found {actual})"
        )
    if actual > expected:
        raise ValueError(
            f"{label}: {actual - expected} unexpected trailing bytes after IDX data of shape {dims}"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header_len)
    # astype copies: native byte order, writable, and independent of the `data` buffer.
    return array.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


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
