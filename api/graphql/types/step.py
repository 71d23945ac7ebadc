"""``Step``: one step (or foreach item) of an execution."""

from __future__ import annotations

from datetime import datetime

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql import fields
from api.graphql.types.steplogs import StepLogPage
from api.schemas.executions import step_fields
from api.schemas.steplogs import StepLogPage as RestPage
from engine.records import StepRecord

#: Lines per page at most, as in REST.
MAX_LOG_LINES = 1000


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
    execution_id: strawberry.Private[str]

    @fields.field(
        description="What the step's finished attempts logged, in order of run, attempt and line "
        "(REST: GET /v1/executions/{id}/steps/{key}/logs)"
    )
    async def logs(
        self,
        info: Info,
        run: int | None = None,
        attempt: int | None = None,
        cursor: str | None = None,
        limit: int = 200,
    ) -> StepLogPage:
        context = info.context
        page = await run_in_threadpool(
            context.runtime.service.step_logs_page,
            context.principal.tenant,
            self.execution_id,
            self.key,
            run=run,
            attempt=attempt,
            cursor=cursor,
            limit=max(1, min(limit, MAX_LOG_LINES)),
        )
        return StepLogPage.build(RestPage.build(page))

    @classmethod
    def from_record(cls, record: StepRecord) -> Step:
        return cls(**step_fields(record), execution_id=record.execution_id)
