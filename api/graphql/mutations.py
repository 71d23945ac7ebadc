"""Root mutation fields. Expected errors come back as ``Problem`` union members."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import Annotated, Any, TypeVar

import strawberry
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from api import actions
from api.graphql import fields
from api.graphql.permissions import requires
from api.graphql.types.execution import Execution, StartedExecution
from api.graphql.types.problem import Problem
from api.graphql.types.step import Step
from api.graphql.types.trigger import Trigger
from api.graphql.types.workflow import AppliedWorkflow, WorkflowVersion
from api.schemas.executions import StartExecution
from api.schemas.triggers import TriggerCreate, TriggerUpdate
from engine.auth import Role
from engine.errors import ConveyorError, InvalidRequest

T = TypeVar("T")


ApplyWorkflowResult = Annotated[AppliedWorkflow | Problem, strawberry.union("ApplyWorkflowResult")]
StartExecutionResult = Annotated[StartedExecution | Problem, strawberry.union("StartExecutionResult")]
ExecutionResult = Annotated[Execution | Problem, strawberry.union("ExecutionResult")]
SignalResult = Annotated[Step | Problem, strawberry.union("SignalResult")]
ApprovalResult = Annotated[Step | Problem, strawberry.union("ApprovalResult")]
TriggerResult = Annotated[Trigger | Problem, strawberry.union("TriggerResult")]


@strawberry.input(description="A schedule (cron or every, and its policies) or an event trigger")
class CreateTriggerInput:
    workflow: str
    kind: str
    spec: JSON
    input: JSON | None = None
    enabled: bool = True


@strawberry.input(description="A partial update; absent fields keep their value")
class UpdateTriggerInput:
    workflow: str | None = None
    spec: JSON | None = None
    input: JSON | None = None
    enabled: bool | None = None


@strawberry.enum(description="An approver's answer")
class ApprovalVerdict(Enum):
    APPROVE = "approve"
    REJECT = "reject"


@strawberry.input
class StartExecutionInput:
    workflow: str
    version: int | None = None
    input: JSON | None = None
    labels: JSON | None = None
    idempotency_key: str | None = None


async def attempt(work: Callable[[], T]) -> T | Problem:
    """Run a use case in the thread pool; an expected error becomes a ``Problem``."""
    try:
        return await run_in_threadpool(work)
    except ConveyorError as exc:
        return Problem.from_error(exc)
    except ValidationError as exc:
        return Problem.from_validation(exc)


def _start(info: Info, item: StartExecutionInput) -> StartedExecution:
    ctx = info.context
    body: dict[str, Any] = {"workflow": item.workflow, "version": item.version, "input": item.input or {}}
    if item.labels is not None:
        body["labels"] = item.labels
    request = StartExecution.model_validate(body)
    result = actions.start_execution(ctx.runtime, ctx.principal, request, item.idempotency_key)
    return StartedExecution(execution=Execution.from_record(result.execution), created=result.created)


def _cancel(info: Info, execution_id: str) -> Execution:
    ctx = info.context
    return Execution.from_record(ctx.runtime.service.cancel(ctx.principal.tenant, execution_id))


def _create_trigger(info: Info, item: CreateTriggerInput) -> Trigger:
    ctx = info.context
    values = {"workflow": item.workflow, "kind": item.kind, "spec": item.spec, "input": item.input or {}}
    body = TriggerCreate.model_validate({**values, "enabled": item.enabled})
    return Trigger.from_record(actions.create_trigger(ctx.runtime, ctx.principal, body))


def _update_trigger(info: Info, trigger_id: str, item: UpdateTriggerInput) -> Trigger:
    ctx = info.context
    values = {"workflow": item.workflow, "spec": item.spec, "input": item.input, "enabled": item.enabled}
    body = TriggerUpdate.model_validate({k: v for k, v in values.items() if v is not None})
    return Trigger.from_record(actions.triggers(ctx.runtime).update(ctx.principal.tenant, trigger_id, body.changes()))


async def _control_many(info: Info, action: str, ids: list[strawberry.ID]) -> list[ExecutionResult]:
    """The batch twin of ``POST /v1/executions/bulk/{action}``: one result per id, in order."""
    ctx = info.context
    use_case = {"cancel": ctx.runtime.service.cancel, "retry": ctx.runtime.service.retry}[action]
    outcomes = await run_in_threadpool(
        actions.control_many, ctx.runtime, ctx.principal, use_case, [str(i) for i in ids]
    )
    return [_execution_or_problem(o) for o in outcomes]


def _execution_or_problem(outcome: actions.BulkOutcome) -> Execution | Problem:
    if outcome.error is not None:
        return Problem.from_error(outcome.error)
    assert outcome.execution is not None
    return Execution.from_record(outcome.execution)


@strawberry.type
class Mutation:
    @fields.mutation(extensions=requires(Role.EDITOR), description="Save a definition as the next version")
    async def apply_workflow(self, info: Info, definition: JSON) -> ApplyWorkflowResult:
        ctx = info.context

        def apply() -> AppliedWorkflow:
            if not isinstance(definition, dict):
                raise InvalidRequest("a definition is an object")
            result = actions.apply_workflow(ctx.runtime, ctx.principal, None, definition)
            return AppliedWorkflow(workflow=WorkflowVersion.from_record(result.version), created=result.created)

        return await attempt(apply)

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Start an execution")
    async def start_execution(self, info: Info, input: StartExecutionInput) -> StartExecutionResult:
        return await attempt(partial(_start, info, input))

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Start many executions (at most 100)")
    async def start_executions(self, info: Info, inputs: list[StartExecutionInput]) -> list[StartExecutionResult]:
        actions.check_bulk(inputs)
        return [await attempt(partial(_start, info, item)) for item in inputs]

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Cancel an execution")
    async def cancel_execution(self, info: Info, id: strawberry.ID) -> ExecutionResult:
        return await attempt(partial(_cancel, info, str(id)))

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Cancel many executions (at most 100)")
    async def cancel_executions(self, info: Info, ids: list[strawberry.ID]) -> list[ExecutionResult]:
        return await _control_many(info, "cancel", ids)

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Retry from the failed steps")
    async def retry_execution(self, info: Info, id: strawberry.ID) -> ExecutionResult:
        ctx = info.context
        return await attempt(lambda: Execution.from_record(ctx.runtime.service.retry(ctx.principal.tenant, str(id))))

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Retry many executions (at most 100)")
    async def retry_executions(self, info: Info, ids: list[strawberry.ID]) -> list[ExecutionResult]:
        return await _control_many(info, "retry", ids)

    @fields.mutation(
        extensions=requires(Role.VIEWER),
        description="Approve or reject a waiting approval step; the step's roles decide who may",
    )
    async def decide_approval(
        self, info: Info, id: strawberry.ID, step: str, decision: ApprovalVerdict, comment: str | None = None
    ) -> ApprovalResult:
        ctx = info.context
        return await attempt(
            lambda: Step.from_record(
                actions.decide_approval(ctx.runtime, ctx.principal, str(id), step, decision.value, comment, "graphql")
            )
        )

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Deliver a payload to a waiting step")
    async def signal_execution(
        self, info: Info, id: strawberry.ID, step: str, payload: JSON | None = None
    ) -> SignalResult:
        ctx = info.context
        return await attempt(
            lambda: Step.from_record(ctx.runtime.service.signal(ctx.principal.tenant, str(id), step, payload))
        )

    @fields.mutation(extensions=requires(Role.EDITOR), description="Create a trigger")
    async def create_trigger(self, info: Info, input: CreateTriggerInput) -> TriggerResult:
        return await attempt(partial(_create_trigger, info, input))

    @fields.mutation(extensions=requires(Role.EDITOR), description="Update a trigger; takes effect within 2 s")
    async def update_trigger(self, info: Info, id: strawberry.ID, input: UpdateTriggerInput) -> TriggerResult:
        return await attempt(partial(_update_trigger, info, str(id), input))
