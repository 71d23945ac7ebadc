"""Conversions between engine records and API values, shared by REST and GraphQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BeforeValidator


def to_timestamp(value: datetime | None) -> float | None:
    """An API datetime as epoch seconds; a naive datetime is taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _iso_only(value: Any) -> Any:
    # Pydantic also reads numbers as Unix timestamps; the API documents RFC 3339 date-times only.
    if isinstance(value, int | float) or (isinstance(value, str) and value.replace(".", "", 1).isdigit()):
        raise ValueError("expected an RFC 3339 date-time such as 2024-05-01T12:00:00Z")
    return value


#: A datetime that must be given as an RFC 3339 string.
IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]


def search_filters(
    workflow: str | None,
    version: int | None,
    labels: list[str] | None,
    trigger: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> dict[str, Any]:
    """Execution search parameters (REST and GraphQL name them alike) as the service takes them."""
    return {
        "workflow": workflow,
        "version": version,
        "labels": labels or (),
        "trigger_id": trigger,
        "created_after": to_timestamp(created_after),
        "created_before": to_timestamp(created_before),
    }
