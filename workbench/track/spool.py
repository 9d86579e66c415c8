"""The spool: batches a tracked run could not deliver, on disk, in order, until they are sent.

One JSON-lines file per run under ``$WORKBENCH_HOME/track/spool/``; each line is one entry,
``{"run_id", "batch_id", "columns": {"key": [...], ...}}`` (a log-batch body) or
``{"run_id", "finish": {"state", "error"}}``.
Entries are only appended; the delivered prefix is remembered in memory and the file removed
once everything in it is delivered. Every batch keeps its ``batch_id``, so sending an entry
twice (a crash between the send and the bookkeeping, or ``sync`` of a file a dead process
left) stores it once. A process that spools holds an exclusive ``flock`` on its file, so
``workbench.track.sync`` never sends a live run's entries behind its back.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

SUFFIX = ".jsonl"


def spool_dir(home: Path | None = None) -> Path:
    if home is None:
        from ..config import get_settings

        home = get_settings().home
    return Path(home) / "track" / "spool"


class Spool:
    """The spool file of one run (opened, and locked, on the first append)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: Any = None  # open for appending (and holding the lock) once used
        self._sent = 0  # byte offset of the delivered prefix
        self.pending = 0  # entries appended and not yet delivered

    @classmethod
    def for_run(cls, run_id: str, home: Path | None = None) -> Spool:
        return cls(spool_dir(home) / f"{run_id}{SUFFIX}")

    def _open(self) -> Any:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(self.path.parent, 0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "ab")
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        return self._file

    def try_lock(self) -> bool:
        """Open and lock an existing file without waiting (False: another process holds it,
        or there is no file). The entries in it count as pending."""
        if self._file is not None:
            return True
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return False
        f = os.fdopen(fd, "ab")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        if not self.path.exists():  # drained and removed between our open and the lock
            f.close()
            return False
        self._file = f
        self.pending = sum(1 for _ in self.entries())
        return True

    def append(self, entry: dict[str, Any]) -> None:
        f = self._open()
        f.write(orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        f.flush()  # in the OS: survives this process being killed
        self.pending += 1

    def entries(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """The undelivered entries in order, each with the offset just past it (give it to
        ``mark_sent``). A torn last line (a crash mid-write) is skipped."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(self._sent)
            offset = self._sent
            for line in f:
                offset += len(line)
                if not line.endswith(b"\n"):
                    return
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    yield offset, entry

    def mark_sent(self, offset: int) -> None:
        """Everything up to ``offset`` is delivered; the file goes once all of it is."""
        self._sent = offset
        self.pending = max(0, self.pending - 1)
        if self.pending == 0:
            self.clear()

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sent = 0
        self.pending = 0
        self.close()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()  # releases the lock
            self._file = None


def leftover(home: Path | None = None) -> list[Path]:
    """Spool files in this home (of runs whose process died or gave up), oldest first."""
    folder = spool_dir(home)
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.name.endswith(SUFFIX)]
    return sorted(files, key=lambda p: p.stat().st_mtime)
