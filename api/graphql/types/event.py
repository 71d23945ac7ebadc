"""``Event``: one entry of an execution's history."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from api.schemas.executions import event_fields
from engine.records import EventRecord


@strawberry.type
class Event:
    id: str
    type: str
    at: datetime
    step_key: str | None
    status: str | None
    attempt: int | None
    data: JSON

    @classmethod
    def from_record(cls, record: EventRecord) -> Event:
        return cls(**event_fields(record))
