"""``Execution``: the header of one execution, with its steps, version and history."""

from __future__ import annotations

from datetime import datetime

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql import fields
from api.graphql.types.event import Event
from api.graphql.types.step import Step
from api.graphql.types.workflow import WorkflowVersion
from api.schemas.executions import execution_fields
from engine.records import ExecutionRecord
from engine.states import ExecutionStatus

MAX_HISTORY = 500


@strawberry.type
class Execution:
    id: strawberry.ID
    workflow: str
    version: int
    status: str = strawberry.field(
        description="The execution's status, one of the ExecutionStatus values (a string, like Problem.status, so both "
        "can be selected in one result union)"
    )
    input: JSON | None
    output: JSON | None
    error: JSON | None
    run: int
    labels: JSON
    idempotency_key: str | None
    parent: JSON | None
    trigger_id: str | None = strawberry.field(description="The trigger (schedule or event) that started it")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    deadline_at: datetime | None
    expires_at: datetime | None = strawberry.field(
        description="When the reconciler deletes this finished execution (its retention); "
        "null while it is active or when it is kept forever"
    )

    @classmethod
    def from_record(cls, record: ExecutionRecord) -> Execution:
        return cls(**execution_fields(record))

    @fields.field(description="Steps of the execution (batched across the response)")
    async def steps(self, info: Info) -> list[Step]:
        records = await info.context.loader().steps.load(str(self.id))
        return [Step.from_record(r) for r in records]

    @fields.field(description="The workflow version this execution runs")
    async def workflow_version(self, info: Info) -> WorkflowVersion | None:
        record = await info.context.loader().workflow_versions.load((self.workflow, self.version))
        return WorkflowVersion.from_record(record) if record else None

    @fields.field(description="History events after the event id `after` (at most 500)")
    async def history(self, info: Info, after: str | None = None, limit: int = 100) -> list[Event]:
        context = info.context
        limit = max(1, min(limit, MAX_HISTORY))
        page = await run_in_threadpool(
            context.runtime.service.list_events, context.principal.tenant, str(self.id), after=after, limit=limit
        )
        return [Event.from_record(e) for e in page.items]


@strawberry.type
class StartedExecution:
    """A started execution; ``created`` is false when an idempotency key found an earlier one."""

    execution: Execution
    created: bool


@strawberry.type
class StatusCount:
    status: str = strawberry.field(description="One of the ExecutionStatus values")
    count: int


@strawberry.type
class ExecutionCounts:
    """Executions matching a search, per status (every status, in the enum's order)."""

    counts: list[StatusCount]
    total: int

    @classmethod
    def build(cls, counts: dict[ExecutionStatus, int]) -> ExecutionCounts:
        return cls(
            counts=[StatusCount(status=status.value, count=n) for status, n in counts.items()],
            total=sum(counts.values()),
        )
