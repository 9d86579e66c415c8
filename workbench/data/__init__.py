"""Data sets for the workbench: MNIST and Fashion-MNIST as ready-to-train tensors.

>>> from workbench.data import load_splits
>>> splits = load_splits("mnist", limit=1000)   # works offline too (bundled real subset)

Needs only torch, numpy, pydantic and the standard library.
"""

from workbench.data.datasets import (
    DATASETS,
    DatasetInfo,
    DatasetUnavailableError,
    RawData,
    Splits,
    canonical_name,
    class_names,
    load_raw,
    load_splits,
)
from workbench.data.download import ChecksumError, DownloadError
from workbench.data.idx import read_idx, write_idx
from workbench.data.urls import load_url_splits

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DatasetInfo",
    "DatasetUnavailableError",
    "DownloadError",
    "RawData",
    "Splits",
    "canonical_name",
    "class_names",
    "load_raw",
    "load_splits",
    "load_url_splits",
    "read_idx",
    "write_idx",
]
