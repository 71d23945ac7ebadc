"""Conversions between engine records and API values, shared by REST and GraphQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def to_datetime(timestamp: float) -> datetime: ...


@overload
def to_datetime(timestamp: float | None) -> datetime | None: ...


def to_datetime(timestamp: float | None) -> datetime | None:
    """Epoch seconds (how records keep time) as an aware UTC datetime."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def to_timestamp(value: datetime | None) -> float | None:
    """An API datetime as epoch seconds; a naive datetime is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()
