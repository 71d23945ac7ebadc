"""``Step``: one step (or foreach item) of an execution."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from api.schemas.executions import step_fields
from engine.records import StepRecord


@strawberry.type
class Step:
    key: str
    step_id: str
    status: str = strawberry.field(
        description="The step's status, one of the StepStatus values (a string, like Problem.status, so both "
        "can be selected in one result union)"
    )
    attempt: int
    run: int
    index: int | None
    item: JSON | None
    item_count: int | None = strawberry.field(description="How many items an expanded foreach step has")
    output: JSON | None
    error: JSON | None
    wait: JSON | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_record(cls, record: StepRecord) -> Step:
        return cls(**step_fields(record))
