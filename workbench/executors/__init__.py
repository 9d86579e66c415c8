"""Executors: where a run executes. See ``base.py`` for the interface."""

from .base import Executor, RunHandle

__all__ = ["Executor", "RunHandle"]
