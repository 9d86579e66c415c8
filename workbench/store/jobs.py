"""Distributed-trainer jobs, their registered devices, and the TFLOPS history of past sessions.

    jobs = TrainerJobs(store)
    job = jobs.create_job(model_config={...}, dataset_config={...})     # job_id "1", "2", ...
    device = jobs.register_device(job_id=job.job_id, ip="127.0.0.1", port=5001)
    jobs.record_session(job_id=job.job_id, devices={"1": {"forward_tflops": ...}, ...})

Tables come from migration step 4 (``workbench.store.migrations``). Like :class:`Store`, this
returns entities, never rows, and every write is one transaction on the store's connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from workbench.store.duck import Store
from workbench.store.times import aware, utcnow

JOB_STATES = ("created", "initialized", "training", "completed", "failed")


class DeviceAlreadyRegistered(ValueError):
    """The (ip, port) pair is registered already."""

    def __init__(self, ip: str, port: int, job_id: str):
        self.ip, self.port, self.job_id = ip, port, job_id
        super().__init__(f"device {ip}:{port} is already registered (job {job_id})")


@dataclass(frozen=True)
class TrainerDevice:
    device_id: int
    job_id: str
    ip: str
    port: int
    score: float | None
    registered_at: datetime


@dataclass(frozen=True)
class TrainerJob:
    job_id: str
    status: str
    model_config: dict[str, Any]
    dataset_config: dict[str, Any]
    allocation: list[dict[str, Any]] | None
    train_config: dict[str, Any] | None
    progress: dict[str, Any] | None
    error: str | None
    run_id: str | None
    created_at: datetime
    updated_at: datetime
    devices: list[TrainerDevice] = field(default_factory=list)


_JOB_COLUMNS = ("job_id, status, model_config, dataset_config, allocation, train_config, progress, "
                "error, run_id, created_at, updated_at")
_DEVICE_COLUMNS = "device_id, job_id, ip, port, score, registered_at"


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None  # a sequence always yields a value
    return row[0]


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class TrainerJobs:
    """Keyword-only queries and updates over the trainer tables of one :class:`Store`."""

    def __init__(self, store: Store):
        self.store = store

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, *, model_config: dict[str, Any], dataset_config: dict[str, Any]) -> TrainerJob:
        now = utcnow()
        with self.store._tx() as con:
            job_id = str(_one(con, "SELECT nextval('trainer_job_seq')"))
            con.execute(
                f"INSERT INTO trainer_jobs ({_JOB_COLUMNS}) VALUES (?, 'created', ?, ?, "
                "NULL, NULL, NULL, NULL, NULL, ?, ?)",
                [job_id, _json(model_config), _json(dataset_config), now, now],
            )
        job = self.get_job(job_id=job_id)
        assert job is not None
        return job

    def _job(self, row: tuple) -> TrainerJob:
        return TrainerJob(
            job_id=row[0], status=row[1], model_config=_load(row[2]), dataset_config=_load(row[3]),
            allocation=_load(row[4]), train_config=_load(row[5]), progress=_load(row[6]),
            error=row[7], run_id=row[8], created_at=aware(row[9]), updated_at=aware(row[10]),
            devices=self.list_devices(job_id=row[0]),
        )

    def get_job(self, *, job_id: str) -> TrainerJob | None:
        rows = self.store._read(f"SELECT {_JOB_COLUMNS} FROM trainer_jobs WHERE job_id = ?",
                                [str(job_id)])
        return self._job(rows[0]) if rows else None

    def list_jobs(self) -> list[TrainerJob]:
        """Oldest first (job ids count up)."""
        rows = self.store._read(f"SELECT {_JOB_COLUMNS} FROM trainer_jobs ORDER BY created_at, "
                                "length(job_id), job_id")
        return [self._job(r) for r in rows]

    def update_job(self, *, job_id: str, **changes: Any) -> None:
        """Set ``status``, ``allocation``, ``train_config``, ``progress``, ``error``, ``run_id``."""
        allowed = {"status", "allocation", "train_config", "progress", "error", "run_id"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        if "status" in changes and changes["status"] not in JOB_STATES:
            raise ValueError(f"status must be one of {JOB_STATES}")
        sets, values = [], []
        for name, value in changes.items():
            sets.append(f"{name} = ?")
            is_json = name in ("allocation", "train_config", "progress")
            values.append(_json(value) if is_json else value)
        with self.store._tx() as con:
            con.execute(f"UPDATE trainer_jobs SET {', '.join(sets)}, updated_at = ? "
                        "WHERE job_id = ?", [*values, utcnow(), str(job_id)])

    def fail_unfinished(self, error: str) -> list[str]:
        """Mark jobs left ``training`` by a previous server as failed (crash recovery)."""
        rows = self.store._read("SELECT job_id FROM trainer_jobs WHERE status = 'training'")
        for (job_id,) in rows:
            self.update_job(job_id=job_id, status="failed", error=error)
        return [r[0] for r in rows]

    # -- devices ----------------------------------------------------------------------------
    def register_device(self, *, job_id: str, ip: str, port: int) -> TrainerDevice:
        """Raises :class:`DeviceAlreadyRegistered` when (ip, port) is registered already."""
        with self.store._tx() as con:
            existing = con.execute("SELECT job_id FROM trainer_devices WHERE ip = ? AND port = ?",
                                   [ip, port]).fetchone()
            if existing:
                raise DeviceAlreadyRegistered(ip, port, existing[0])
            device_id = int(_one(con, "SELECT nextval('trainer_device_seq')"))
            try:
                con.execute(f"INSERT INTO trainer_devices ({_DEVICE_COLUMNS}) "
                            "VALUES (?, ?, ?, ?, NULL, ?)", [device_id, str(job_id), ip, port, utcnow()])
            except duckdb.ConstraintException as exc:  # a concurrent registration won
                raise DeviceAlreadyRegistered(ip, port, str(job_id)) from exc
        return self.list_devices(job_id=job_id, device_id=device_id)[0]

    def list_devices(self, *, job_id: str | None = None, device_id: int | None = None,
                     port: int | None = None) -> list[TrainerDevice]:
        where, values = [], []
        for column, value in (("job_id", job_id), ("device_id", device_id), ("port", port)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(str(value) if column == "job_id" else value)
        sql = f"SELECT {_DEVICE_COLUMNS} FROM trainer_devices"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.store._read(sql + " ORDER BY device_id", values)
        return [TrainerDevice(device_id=r[0], job_id=r[1], ip=r[2], port=r[3], score=r[4],
                              registered_at=aware(r[5])) for r in rows]

    def set_device_score(self, *, device_id: int, score: float) -> None:
        with self.store._tx() as con:
            con.execute("UPDATE trainer_devices SET score = ? WHERE device_id = ?",
                        [score, device_id])

    def unregister_port(self, *, port: int) -> list[TrainerDevice]:
        """Remove every device listening on ``port``; returns what was removed."""
        gone = self.list_devices(port=port)
        if gone:
            with self.store._tx() as con:
                con.execute("DELETE FROM trainer_devices WHERE port = ?", [port])
        return gone

    # -- TFLOPS history ---------------------------------------------------------------------
    def record_session(self, *, job_id: str, devices: dict[str, dict[str, float]]) -> None:
        """One finished training session: ``{device_id: {forward_tflops, backward_tflops,
        total_tflops}}``."""
        with self.store._tx() as con:
            con.execute("INSERT INTO teraflops_sessions (job_id, devices, created_at) "
                        "VALUES (?, ?, ?)", [str(job_id), _json(devices), utcnow()])

    def list_sessions(self) -> list[dict[str, dict[str, float]]]:
        """Every past session's per-device figures, oldest first."""
        rows = self.store._read("SELECT devices FROM teraflops_sessions ORDER BY session_id")
        return [_load(r[0]) for r in rows]
