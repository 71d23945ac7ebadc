"""``StepLogPage``: what a step's finished attempts logged (``Step.logs``)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.schemas.steplogs import StepLogPage as RestPage


@strawberry.type
class StepLogLine:
    run: int
    attempt: int
    seq: int
    at: datetime
    level: str
    logger: str
    message: str


@strawberry.type
class StepLogAttempt:
    run: int
    attempt: int
    lines: int
    dropped: int = strawberry.field(description="Lines over the per-attempt bound: counted, not kept")
    started_at: datetime
    finished_at: datetime


@strawberry.type
class StepLogPage:
    items: list[StepLogLine]
    attempts: list[StepLogAttempt]
    next_cursor: str | None

    @classmethod
    def build(cls, page: RestPage) -> StepLogPage:
        """From the REST model, so both APIs show exactly the same fields."""
        return cls(
            items=[StepLogLine(**line.model_dump()) for line in page.items],
            attempts=[StepLogAttempt(**attempt.model_dump()) for attempt in page.attempts],
            next_cursor=page.next_cursor,
        )
