"""``Trigger``: a schedule or event trigger, with a schedule's next fire times and counters."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from api.schemas.triggers import trigger_fields
from engine.records import TriggerRecord


@strawberry.type(description="An upcoming fire time; note says how a daylight-saving shift moves it")
class FireTime:
    at: datetime
    note: str | None


@strawberry.type
class Trigger:
    id: strawberry.ID
    workflow: str
    kind: str
    spec: JSON
    input: JSON
    enabled: bool
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None
    next_fires: list[FireTime]
    fired: int | None = strawberry.field(
        description="Fire times that started an execution (schedules); null for an event trigger, whose starts"
        " are not counted on it: find them with executions(trigger: id) and executionCounts(trigger: id)"
    )
    missed: int
    skipped: int
    buffered: int
    last_fire_at: datetime | None
    last_error: str | None
    running: list[str]
    pending: list[datetime]

    @classmethod
    def from_record(cls, record: TriggerRecord) -> Trigger:
        fields = trigger_fields(record)
        fields["next_fires"] = [FireTime(**fire) for fire in fields["next_fires"]]
        return cls(**fields)
