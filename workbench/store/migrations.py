"""Versioned schema for the DuckDB store.

``MIGRATIONS`` is an ordered list; step *n* (1-based) takes the schema from version n-1 to n.
Each step runs once, inside its own transaction, and records itself in ``schema_version``.
Later changes APPEND steps; never edit a step that has shipped.

All timestamps are naive ``TIMESTAMP`` values in UTC (``TIMESTAMPTZ`` would make DuckDB's
Python client depend on pytz and on the session time zone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from workbench.store.names import default_run_name
from workbench.store.summary import backfill_summaries


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    # SQL statements, or a callable receiving the connection (inside the transaction).
    statements: tuple[str, ...] = ()
    apply: Callable[[duckdb.DuckDBPyConnection], None] | None = None


MIGRATIONS: list[Migration] = [
    Migration(
        version=1,
        description="models, runs, metrics, params, events",
        statements=(
            """
            CREATE TABLE models (
                model_id     VARCHAR PRIMARY KEY,
                name         VARCHAR NOT NULL,
                architecture JSON NOT NULL,
                hyperparams  JSON NOT NULL,
                created_at   TIMESTAMP NOT NULL
            )
            """,
            """
            CREATE TABLE runs (
                run_id       VARCHAR PRIMARY KEY,
                model_id     VARCHAR NOT NULL,
                state        VARCHAR NOT NULL,
                error        VARCHAR,
                epoch        INTEGER NOT NULL DEFAULT 0,
                epochs_total INTEGER NOT NULL,
                hyperparams  JSON NOT NULL,
                dataset      VARCHAR NOT NULL,
                target       VARCHAR NOT NULL,
                device       VARCHAR,
                param_id     VARCHAR,
                created_at   TIMESTAMP NOT NULL,
                started_at   TIMESTAMP,
                finished_at  TIMESTAMP,
                updated_at   TIMESTAMP NOT NULL
            )
            """,
            """
            CREATE TABLE metrics (
                run_id VARCHAR NOT NULL,
                epoch  INTEGER NOT NULL,
                step   BIGINT,
                name   VARCHAR NOT NULL,
                value  DOUBLE,
                time   TIMESTAMP NOT NULL
            )
            """,
            "CREATE INDEX metrics_run_idx ON metrics (run_id)",
            """
            CREATE TABLE params (
                param_id    VARCHAR PRIMARY KEY,
                model_id    VARCHAR NOT NULL,
                run_id      VARCHAR,
                safetensors BLOB NOT NULL,
                size_bytes  BIGINT NOT NULL,
                created_at  TIMESTAMP NOT NULL
            )
            """,
            "CREATE SEQUENCE events_id_seq START 1",
            """
            CREATE TABLE events (
                id     BIGINT PRIMARY KEY DEFAULT nextval('events_id_seq'),
                run_id VARCHAR NOT NULL,
                type   VARCHAR NOT NULL,
                time   TIMESTAMP NOT NULL,
                data   JSON NOT NULL
            )
            """,
            "CREATE INDEX events_run_idx ON events (run_id)",
        ),
    ),
    Migration(
        version=2,
        description="api_keys (sha256 hashes only)",
        statements=(
            """
            CREATE TABLE api_keys (
                key_id       VARCHAR PRIMARY KEY,
                name         VARCHAR NOT NULL,
                hash         VARCHAR NOT NULL UNIQUE,
                permissions  VARCHAR NOT NULL,
                created_at   TIMESTAMP NOT NULL,
                expires_at   TIMESTAMP,
                revoked_at   TIMESTAMP,
                last_used_at TIMESTAMP
            )
            """,
        ),
    ),
    Migration(
        version=3,
        description="nodes (registered Jupyter Servers; tokens live outside the database)",
        statements=(
            """
            CREATE TABLE nodes (
                node_id           VARCHAR PRIMARY KEY,
                name              VARCHAR NOT NULL,
                url               VARCHAR NOT NULL,
                region            VARCHAR,
                status            VARCHAR NOT NULL,
                capabilities      JSON NOT NULL,
                gpu_info          JSON,
                cpu_count         INTEGER,
                torch_version     VARCHAR,
                workbench_version VARCHAR,
                server_version    VARCHAR,
                performance_score DOUBLE,
                current_load      DOUBLE,
                server_started_at TIMESTAMP,
                last_seen         TIMESTAMP,
                last_error        VARCHAR,
                registered_at     TIMESTAMP NOT NULL,
                updated_at        TIMESTAMP NOT NULL
            )
            """,
        ),
    ),
    Migration(
        version=4,
        description="distributed-trainer jobs, devices and TFLOPS sessions",
        statements=(
            "CREATE SEQUENCE trainer_job_seq START 1",
            """
            CREATE TABLE trainer_jobs (
                job_id         VARCHAR PRIMARY KEY,
                status         VARCHAR NOT NULL,
                model_config   JSON NOT NULL,
                dataset_config JSON NOT NULL,
                allocation     JSON,
                train_config   JSON,
                progress       JSON,
                error          VARCHAR,
                run_id         VARCHAR,
                created_at     TIMESTAMP NOT NULL,
                updated_at     TIMESTAMP NOT NULL
            )
            """,
            "CREATE SEQUENCE trainer_device_seq START 1",
            """
            CREATE TABLE trainer_devices (
                device_id     INTEGER PRIMARY KEY,
                job_id        VARCHAR NOT NULL,
                ip            VARCHAR NOT NULL,
                port          INTEGER NOT NULL,
                score         DOUBLE,
                registered_at TIMESTAMP NOT NULL
            )
            """,
            "CREATE SEQUENCE teraflops_session_seq START 1",
            """
            CREATE TABLE teraflops_sessions (
                session_id BIGINT PRIMARY KEY DEFAULT nextval('teraflops_session_seq'),
                job_id     VARCHAR NOT NULL,
                devices    JSON NOT NULL,
                created_at TIMESTAMP NOT NULL
            )
            """,
        ),
    ),
    Migration(
        version=5,
        description="run organisation (name, experiment, tags, notes) and run_summary",
        statements=(
            "ALTER TABLE runs ADD COLUMN name VARCHAR",
            "ALTER TABLE runs ADD COLUMN experiment VARCHAR DEFAULT 'default'",
            "ALTER TABLE runs ADD COLUMN tags VARCHAR[] DEFAULT []",
            "ALTER TABLE runs ADD COLUMN notes VARCHAR DEFAULT ''",
            """
            CREATE TABLE run_summary (
                run_id      VARCHAR NOT NULL,
                name        VARCHAR NOT NULL,
                final       DOUBLE,
                best_min    DOUBLE,
                best_max    DOUBLE,
                final_epoch INTEGER,
                points      BIGINT NOT NULL,
                PRIMARY KEY (run_id, name)
            )
            """,
        ),
        apply=lambda con: _organise_existing_runs(con),
    ),
    Migration(
        version=6,
        description="datasets: the registry of built-in and user datasets (issue 20)",
        statements=(
            """
            CREATE TABLE datasets (
                dataset_id  VARCHAR PRIMARY KEY,
                name        VARCHAR NOT NULL UNIQUE,
                kind        VARCHAR NOT NULL,
                source      VARCHAR NOT NULL,
                file        VARCHAR,
                input_shape JSON NOT NULL,
                classes     JSON NOT NULL,
                counts      JSON NOT NULL,
                stats       JSON NOT NULL,
                n_samples   BIGINT NOT NULL,
                created_at  TIMESTAMP NOT NULL
            )
            """,
        ),
    ),
    # Every statement is idempotent (IF NOT EXISTS): a development store that ran this step
    # under another number (it was written beside 5 and 6) is unharmed.
    Migration(
        version=7,
        description="api key rate-limit tiers; node owners; persisted /api/v1 deployments; "
                    "webhooks",
        statements=(
            "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rate_tier VARCHAR",
            "ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rate_limit INTEGER",
            "ALTER TABLE nodes ADD COLUMN IF NOT EXISTS owner_key_id VARCHAR",
            """
            CREATE TABLE IF NOT EXISTS deployments (
                deployment_id VARCHAR PRIMARY KEY,
                job_id        VARCHAR NOT NULL,
                param_id      VARCHAR NOT NULL,
                config        JSON NOT NULL,
                created_at    TIMESTAMP NOT NULL,
                deleted_at    TIMESTAMP
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS webhooks (
                webhook_id VARCHAR PRIMARY KEY,
                url        VARCHAR NOT NULL,
                events     JSON NOT NULL,
                key_id     VARCHAR,
                created_at TIMESTAMP NOT NULL,
                deleted_at TIMESTAMP
            )
            """,
            """
            CREATE TABLE IF NOT EXISTS webhook_deliveries (
                delivery_id  VARCHAR PRIMARY KEY,
                webhook_id   VARCHAR NOT NULL,
                event_type   VARCHAR NOT NULL,
                payload      JSON NOT NULL,
                status       VARCHAR NOT NULL,
                attempts     INTEGER NOT NULL,
                last_status  INTEGER,
                last_error   VARCHAR,
                created_at   TIMESTAMP NOT NULL,
                delivered_at TIMESTAMP
            )
            """,
        ),
    ),
    Migration(
        version=8,
        description="training checkpoints (files beside the store, see store/checkpoints.py)",
        statements=(
            """
            CREATE TABLE IF NOT EXISTS checkpoints (
                checkpoint_id VARCHAR PRIMARY KEY,
                run_id        VARCHAR NOT NULL,
                epoch         INTEGER NOT NULL,
                global_step   BIGINT NOT NULL,
                file          VARCHAR NOT NULL,
                size_bytes    BIGINT NOT NULL,
                sha256        VARCHAR NOT NULL,
                state         JSON NOT NULL,
                created_at    TIMESTAMP NOT NULL
            )
            """,
            "CREATE INDEX IF NOT EXISTS checkpoints_run_idx ON checkpoints (run_id)",
        ),
    ),
    Migration(
        version=9,
        description="experiments as records (a description each); one per name runs use",
        statements=(
            """
            CREATE TABLE IF NOT EXISTS experiments (
                name        VARCHAR PRIMARY KEY,
                description VARCHAR NOT NULL DEFAULT '',
                created_at  TIMESTAMP NOT NULL
            )
            """,
            """
            INSERT INTO experiments (name, description, created_at)
            SELECT experiment, '', min(created_at) FROM runs
            WHERE experiment IS NOT NULL AND experiment NOT IN (SELECT name FROM experiments)
            GROUP BY experiment
            """,
        ),
    ),
]

LATEST_VERSION = MIGRATIONS[-1].version if MIGRATIONS else 0


def _organise_existing_runs(con: duckdb.DuckDBPyConnection) -> None:
    """Runs from before version 5: a tracked run keeps the name, experiment and tags its
    client gave (kept in its hyperparams); every other run gets its readable default name."""
    con.execute(
        "UPDATE runs SET name = json_extract_string(hyperparams, '$.name'), "
        "experiment = coalesce(json_extract_string(hyperparams, '$.experiment'), 'default'), "
        "tags = coalesce(CAST(json_extract_string(hyperparams, '$.tags[*]') AS VARCHAR[]), []) "
        "WHERE target = 'external'"
    )
    unnamed = [r[0] for r in con.execute("SELECT run_id FROM runs WHERE name IS NULL").fetchall()]
    if unnamed:
        con.executemany("UPDATE runs SET name = ? WHERE run_id = ?",
                        [[default_run_name(run_id), run_id] for run_id in unnamed])
    backfill_summaries(con)


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer workbench than this one."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest applied migration (0 for a fresh database)."""
    # Aggregates without GROUP BY always return exactly one row.
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = 'schema_version'"
    ).fetchone()
    assert row is not None
    if not row[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    assert row is not None
    return int(row[0] or 0)


def migrate(con: duckdb.DuckDBPyConnection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply every pending migration in order; returns the versions applied (idempotent)."""
    steps = MIGRATIONS if migrations is None else migrations
    _check_order(steps)
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMP NOT NULL)"
    )
    applied: list[int] = []
    have = current_version(con)
    latest = steps[-1].version if steps else 0
    if have > latest:
        raise SchemaTooNewError(
            f"store schema is version {have} but this workbench only knows up to {latest}; "
            "upgrade nn-workbench"
        )
    for step in steps:
        if step.version <= have:
            continue
        con.begin()
        try:
            # Re-check inside the transaction (another connection may have migrated).
            if current_version(con) >= step.version:
                con.rollback()
                continue
            for sql in step.statements:
                con.execute(sql)
            if step.apply is not None:
                step.apply(con)
            con.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                [step.version, step.description, _utcnow()],
            )
            con.commit()
        except BaseException:
            con.rollback()
            raise
        applied.append(step.version)
    return applied


def _check_order(steps: list[Migration]) -> None:
    for expected, step in enumerate(steps, start=1):
        if step.version != expected:
            raise RuntimeError(
                f"migration list out of order: position {expected} has version {step.version}"
            )
