"""Tokens of registered Jupyter Servers, kept out of the database in an owner-only file.

``$WORKBENCH_HOME/node_tokens.json`` (mode 0600): ``{node_id: token}``. The DuckDB file can be
queried with ``workbench sql`` and copied around; a server token is a credential to run code on
that machine, so it lives apart, readable by the owner only, and no API ever returns it.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from ..config import get_settings

TOKENS_FILE = "node_tokens.json"


class TokenFile:
    """A tiny owner-only key-value file: ``set``, ``get``, ``delete``. Thread-safe."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else get_settings().home / TOKENS_FILE
        self._lock = threading.Lock()

    def get(self, node_id: str) -> str | None:
        with self._lock:
            return self._load().get(node_id)

    def set(self, node_id: str, token: str) -> None:
        with self._lock:
            tokens = self._load()
            tokens[node_id] = token
            self._save(tokens)

    def delete(self, node_id: str) -> None:
        with self._lock:
            tokens = self._load()
            if tokens.pop(node_id, None) is not None:
                self._save(tokens)

    def _load(self) -> dict[str, str]:
        try:
            return dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return {}

    def _save(self, tokens: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 before anything is written; replace() is atomic.
        fd, tmp = tempfile.mkstemp(prefix=".node_tokens.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(tokens, f)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
