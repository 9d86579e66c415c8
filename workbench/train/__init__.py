"""The training engine (pure torch): ``train(architecture, hyperparams, splits, sink=...)``."""

from .engine import TrainOptions, TrainResult, evaluate, resolve_device, train

__all__ = ["TrainOptions", "TrainResult", "evaluate", "resolve_device", "train"]
