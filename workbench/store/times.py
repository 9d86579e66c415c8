"""Timestamps in the store: DuckDB columns hold naive UTC; entities carry aware UTC.

One place for the conversions, so every table agrees on what a stored time means.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Naive UTC 'now', as the columns store it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_db(value: datetime) -> datetime:
    """Any datetime as naive UTC (aware values are converted; naive ones are taken as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None)


def to_db_opt(value: datetime | None) -> datetime | None:
    return None if value is None else to_db(value)


def aware(value: datetime) -> datetime:
    """A naive UTC timestamp from a NOT NULL column as an aware UTC datetime."""
    return value.replace(tzinfo=timezone.utc)


def aware_opt(value: datetime | None) -> datetime | None:
    """Like :func:`aware`, for nullable columns."""
    return None if value is None else aware(value)
