"""Training checkpoints in the store: a ``checkpoints`` row per checkpoint, its tensors in a
file beside the database (``$WORKBENCH_HOME/checkpoints/<run_id>/``).

Why files and not BLOBs like ``params``: a run writes a checkpoint every few epochs and each
supersedes the last (only the newest ``KEEP`` are kept), so they are written and deleted all
the time; DuckDB does not give the space of deleted BLOBs back to the file system, so the
database would only grow. The row holds the file's name, size and SHA-256 (checked on every
read) and the checkpoint's JSON state. Only the owner process writes either. A mixin of
:class:`workbench.store.Store`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from workbench.store.times import aware, utcnow
from workbench.store.values import dumps, loads, new_id

KEEP = 2  # checkpoints kept per run (the newest); older ones are deleted as new ones land
_COLUMNS = "checkpoint_id, run_id, epoch, global_step, file, size_bytes, sha256, state, " \
           "created_at"


@dataclass(frozen=True)
class CheckpointRecord:
    checkpoint_id: str
    run_id: str
    epoch: int
    global_step: int
    file: str  # relative to the checkpoint directory
    size_bytes: int
    sha256: str
    state: dict[str, Any]
    created_at: datetime
    tensors: bytes | None = field(default=None, repr=False)  # read on demand (with_tensors)


class CheckpointError(RuntimeError):
    """A checkpoint's file is missing or does not match its recorded checksum."""


class CheckpointsMixin:
    """Checkpoint methods of ``Store``."""

    if TYPE_CHECKING:  # provided by StoreConnection
        path: Path

        def _read(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...

    @property
    def checkpoint_dir(self) -> Path:
        """Where checkpoint files live: beside the database (a temporary directory for an
        in-memory store)."""
        cached = self.__dict__.get("_checkpoint_dir")
        if cached is None:
            if str(self.path) == ":memory:":
                cached = Path(tempfile.mkdtemp(prefix="workbench-checkpoints-"))
            else:
                cached = self.path.parent / "checkpoints"
            self.__dict__["_checkpoint_dir"] = cached
        return cached

    def _save_checkpoint(self, con: duckdb.DuckDBPyConnection, run_id: str, *, epoch: int,
                         global_step: int, state: dict[str, Any], tensors: bytes) -> dict:
        """Write the file (atomically), insert its row, drop checkpoints past ``KEEP``;
        returns what the logged event keeps instead of the tensors."""
        checkpoint_id = new_id("ck_")
        relative = f"{run_id}/{epoch:06d}-{checkpoint_id}.safetensors"
        target = self.checkpoint_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        partial.write_bytes(tensors)
        os.replace(partial, target)
        digest = hashlib.sha256(tensors).hexdigest()
        con.execute(f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [checkpoint_id, run_id, epoch, global_step, relative, len(tensors), digest,
                     dumps(state), utcnow()])
        old = con.execute(
            "SELECT checkpoint_id, file FROM checkpoints WHERE run_id = ? "
            "ORDER BY epoch DESC, created_at DESC OFFSET ?", [run_id, KEEP]).fetchall()
        for old_id, old_file in old:
            con.execute("DELETE FROM checkpoints WHERE checkpoint_id = ?", [old_id])
            (self.checkpoint_dir / old_file).unlink(missing_ok=True)
        return {"checkpoint_id": checkpoint_id, "size_bytes": len(tensors), "sha256": digest}

    def list_checkpoints(self, run_id: str) -> list[CheckpointRecord]:
        """A run's kept checkpoints, newest first (without their tensors)."""
        rows = self._read(f"SELECT {_COLUMNS} FROM checkpoints WHERE run_id = ? "
                          "ORDER BY epoch DESC, created_at DESC", [run_id])
        return [_record(row) for row in rows]

    def latest_checkpoint(self, run_id: str, *, with_tensors: bool = False
                          ) -> CheckpointRecord | None:
        """The newest checkpoint of a run (its tensors read and verified if asked:
        ``CheckpointError`` for a missing or altered file), or None."""
        found = self.list_checkpoints(run_id)
        if not found:
            return None
        record = found[0]
        if not with_tensors:
            return record
        try:
            blob = (self.checkpoint_dir / record.file).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"checkpoint {record.checkpoint_id} of run {run_id}: its "
                                  f"file cannot be read ({exc})") from None
        if hashlib.sha256(blob).hexdigest() != record.sha256:
            raise CheckpointError(f"checkpoint {record.checkpoint_id} of run {run_id}: its "
                                  "file does not match its recorded SHA-256")
        return CheckpointRecord(**{**record.__dict__, "tensors": blob})

    def _drop_checkpoints(self, con: duckdb.DuckDBPyConnection, run_id: str) -> None:
        """Delete a run's checkpoints (it succeeded: nothing will resume it)."""
        con.execute("DELETE FROM checkpoints WHERE run_id = ?", [run_id])
        shutil.rmtree(self.checkpoint_dir / run_id, ignore_errors=True)


def _record(row: tuple) -> CheckpointRecord:
    checkpoint_id, run_id, epoch, step, file, size, digest, state, created = row
    return CheckpointRecord(checkpoint_id=checkpoint_id, run_id=run_id, epoch=int(epoch),
                            global_step=int(step), file=file, size_bytes=int(size),
                            sha256=digest, state=loads(state) or {}, created_at=aware(created))
