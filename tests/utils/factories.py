"""Small model definitions and MNIST test images for API tests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


def mlp(hidden: int = 64, input_size: int = 784, classes: int = 10) -> dict[str, Any]:
    return {
        "input_size": input_size,
        "layers": [
            {"type": "linear", "in": input_size, "out": hidden},
            {"type": "relu"},
            {"type": "linear", "in": hidden, "out": classes},
        ],
    }


def quick_hyperparams(**overrides: Any) -> dict[str, Any]:
    """Adam, a few epochs, a 25% validation split (1,000 images: a steady accuracy)."""
    hp = {"epochs": 4, "batch_size": 64, "optimizer": {"type": "adam", "lr": 1e-3},
          "seed": 0, "train_split": 0.75}
    hp.update(overrides)
    return hp


@lru_cache(maxsize=1)
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The bundled real-MNIST test images, standardised like training data: (x, y)."""
    from workbench.data import load_splits

    splits = load_splits("mnist", offline=True, progress=False)
    return splits.x_test.numpy(), splits.y_test.numpy()
