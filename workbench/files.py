"""Private files: secrets and tokens written readable by this user only, atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def create_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600, folder 0700) unless it exists; atomic: another
    process sees either no file or the whole text, and a concurrent creator's file wins."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
