"""Inference helpers for the service: input checking, a per-``param_id`` LRU of loaded models,
and the forward pass that produces logits / probabilities / labels.

Inputs are in the space the model was trained in: the workbench trains on MNIST pixels scaled
to [0, 1] and then standardised with the data set's mean/std (``Splits.mean``/``Splits.std``),
so clients send the same standardised values (``load_splits(...).x_test`` rows as they are).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model import build_model, from_safetensors, load_weights, logits_module
from ..spec import Network
from .errors import InvalidInput


@dataclass(frozen=True)
class LoadedModel:
    model_id: str | None  # None for ad-hoc weights
    param_id: str | None
    architecture: Network
    net: nn.Module  # produces logits (a final softmax is left out)


def build_loaded(model_id: str | None, param_id: str | None, architecture: Network,
                 tensors: dict[str, torch.Tensor]) -> LoadedModel:
    model = build_model(architecture)  # kept as the nn.Sequential that logits_module slices
    load_weights(model, tensors).eval()
    return LoadedModel(model_id, param_id, architecture, logits_module(model))


def loaded_from_blob(model_id: str, param_id: str, architecture: Network,
                     safetensors: bytes) -> LoadedModel:
    return build_loaded(model_id, param_id, architecture, from_safetensors(safetensors))


class ModelCache:
    """A small thread-safe LRU of loaded models keyed by ``param_id`` (weights never change)."""

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], LoadedModel]) -> LoadedModel:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
        item = load()  # outside the lock: loading reads the store and builds a module
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def check_inputs(inputs: Any, width: int) -> np.ndarray:
    """A ``(n, width)`` float32 array, or ``InvalidInput`` naming the first bad input, e.g.
    ``inputs[3]: expected 784 values, got 783``."""
    if isinstance(inputs, np.ndarray):
        array = inputs.astype(np.float32, copy=False)
        if array.ndim != 2:
            raise InvalidInput(
                [f"inputs: expected a batch of shape [n][{width}], got shape {list(array.shape)}"]
            )
    else:
        if not isinstance(inputs, Sequence) or isinstance(inputs, (str, bytes)):
            raise InvalidInput([f"inputs: expected a list of inputs of {width} values each"])
        for i, row in enumerate(inputs):
            if not isinstance(row, Sequence) or isinstance(row, (str, bytes)):
                raise InvalidInput([f"inputs[{i}]: expected a list of {width} numbers"])
            if len(row) != width:
                raise InvalidInput([f"inputs[{i}]: expected {width} values, got {len(row)}"])
        try:
            array = np.asarray(inputs, dtype=np.float32).reshape(len(inputs), width)
        except (TypeError, ValueError) as exc:
            raise InvalidInput([f"inputs: not numbers ({exc})"]) from None
    if array.shape[0] == 0:
        raise InvalidInput(["inputs: at least one input is required"])
    if array.shape[1] != width:
        raise InvalidInput([f"inputs[0]: expected {width} values, got {array.shape[1]}"])
    finite = np.isfinite(array)
    if not finite.all():
        row, col = (int(v[0]) for v in np.nonzero(~finite))
        raise InvalidInput(
            [f"inputs[{row}][{col}]: {array[row, col]} is not a finite float32 number"]
        )
    return array


def forward(loaded: LoadedModel, x: np.ndarray, *, logits: bool, probabilities: bool,
            labels: bool, started: float | None = None) -> dict[str, Any]:
    """Run the model; returns the MNIST MLP API's inference response body."""
    started = time.perf_counter() if started is None else started
    with torch.inference_mode():
        z = loaded.net(torch.from_numpy(x))  # (n, in) -> (n, classes)
        outputs: dict[str, Any] = {}
        if labels:
            outputs["labels"] = z.argmax(1).tolist()
        if probabilities:
            outputs["probabilities"] = torch.softmax(z, 1).tolist()
        if logits:
            outputs["logits"] = [[v if math.isfinite(v) else None for v in row]
                                 for row in z.tolist()]
    return {
        "model_id": loaded.model_id,
        "param_id": loaded.param_id,
        "outputs": outputs,
        "latency_ms": (time.perf_counter() - started) * 1000.0,
    }
