"""``Trigger``: a schedule or event trigger (bookkeeping; firing happens elsewhere)."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from api.schemas.triggers import trigger_fields
from engine.records import TriggerRecord


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

    @classmethod
    def from_record(cls, record: TriggerRecord) -> Trigger:
        return cls(**trigger_fields(record))
