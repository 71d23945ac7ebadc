"""Instants as records keep them (epoch seconds) and as aware datetimes.

One conversion for every reader that renders a record's times: the REST and GraphQL schemas
and the CLI's ``--json`` output (which must not import the ``api`` package, see
:mod:`conveyor.jsontimes`).
"""

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
