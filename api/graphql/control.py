"""Root mutations that control what exists: pause, resume and delete executions, archive and restore
workflows, enable, disable and delete triggers, create and revoke API keys, validate
definitions. Each is the twin of a REST route (``x-graphql`` in the route table)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from api import actions
from api.graphql import fields
from api.graphql.mutations import ExecutionResult, TriggerResult, attempt
from api.graphql.permissions import requires
from api.graphql.types.enums import Role as RoleEnum
from api.graphql.types.execution import Execution
from api.graphql.types.key import ApiKey, CreatedApiKey
from api.graphql.types.problem import Problem, ProblemDetail
from api.graphql.types.trigger import Trigger
from api.graphql.types.workflow import WorkflowVersion
from api.schemas.keys import KeyCreate
from engine.auth import Role
from engine.errors import InvalidRequest

WorkflowResult = Annotated[WorkflowVersion | Problem, strawberry.union("WorkflowResult")]
KeyResult = Annotated[ApiKey | Problem, strawberry.union("KeyResult")]
CreatedKeyResult = Annotated[CreatedApiKey | Problem, strawberry.union("CreatedKeyResult")]


@strawberry.type
class DeletedTrigger:
    id: strawberry.ID


DeleteTriggerResult = Annotated[DeletedTrigger | Problem, strawberry.union("DeleteTriggerResult")]


@strawberry.type
class DeletedExecution:
    id: strawberry.ID


DeleteExecutionResult = Annotated[DeletedExecution | Problem, strawberry.union("DeleteExecutionResult")]


@strawberry.type(description="The result of validating a definition without saving it")
class WorkflowValidation:
    valid: bool
    name: str | None
    order: list[str]
    problems: list[ProblemDetail]


@strawberry.input
class CreateKeyInput:
    name: str
    role: RoleEnum = Role.VIEWER
    ttl_seconds: int | None = None


@strawberry.type
class ControlMutation:
    @fields.mutation(extensions=requires(Role.OPERATOR), description="Pause: no new steps are claimed")
    async def pause_execution(self, info: Info, id: strawberry.ID) -> ExecutionResult:
        ctx = info.context
        return await attempt(lambda: Execution.from_record(ctx.runtime.service.pause(ctx.principal.tenant, str(id))))

    @fields.mutation(extensions=requires(Role.OPERATOR), description="Resume a paused execution")
    async def resume_execution(self, info: Info, id: strawberry.ID) -> ExecutionResult:
        ctx = info.context
        return await attempt(lambda: Execution.from_record(ctx.runtime.service.resume(ctx.principal.tenant, str(id))))

    @fields.mutation(
        extensions=requires(Role.OPERATOR),
        description="Delete a finished execution with everything derived from it (see DELETE /v1/executions/{id})",
    )
    async def delete_execution(self, info: Info, id: strawberry.ID) -> DeleteExecutionResult:
        ctx = info.context

        def delete() -> DeletedExecution:
            ctx.runtime.service.delete_execution(ctx.principal.tenant, str(id))
            return DeletedExecution(id=id)

        return await attempt(delete)

    @fields.mutation(extensions=requires(Role.EDITOR), description="Archive a workflow (no new starts)")
    async def archive_workflow(self, info: Info, name: str) -> WorkflowResult:
        return await attempt(lambda: _set_archived(info, name, True))

    @fields.mutation(extensions=requires(Role.EDITOR), description="Restore an archived workflow")
    async def restore_workflow(self, info: Info, name: str) -> WorkflowResult:
        return await attempt(lambda: _set_archived(info, name, False))

    @fields.mutation(extensions=requires(Role.VIEWER), description="Validate a definition without saving it")
    async def validate_workflow(self, info: Info, definition: JSON) -> WorkflowValidation:
        if not isinstance(definition, dict):
            return WorkflowValidation(
                valid=False, name=None, order=[], problems=[ProblemDetail(path="", message="a definition is an object")]
            )
        report = actions.validate_workflow(info.context.runtime, definition)
        problems = [ProblemDetail(path=p.path, message=p.message) for p in report.problems]
        return WorkflowValidation(valid=report.valid, name=report.name, order=list(report.order), problems=problems)

    @fields.mutation(extensions=requires(Role.EDITOR), description="Enable a trigger")
    async def enable_trigger(self, info: Info, id: strawberry.ID) -> TriggerResult:
        return await attempt(lambda: _set_enabled(info, str(id), True))

    @fields.mutation(extensions=requires(Role.EDITOR), description="Disable a trigger")
    async def disable_trigger(self, info: Info, id: strawberry.ID) -> TriggerResult:
        return await attempt(lambda: _set_enabled(info, str(id), False))

    @fields.mutation(extensions=requires(Role.EDITOR), description="Delete a trigger")
    async def delete_trigger(self, info: Info, id: strawberry.ID) -> DeleteTriggerResult:
        ctx = info.context

        def delete() -> DeletedTrigger:
            actions.triggers(ctx.runtime).delete(ctx.principal.tenant, str(id))
            return DeletedTrigger(id=id)

        return await attempt(delete)

    @fields.mutation(extensions=requires(Role.ADMIN), description="Create an API key for the caller's tenant")
    async def create_key(self, info: Info, input: CreateKeyInput) -> CreatedKeyResult:
        ctx = info.context

        def create() -> CreatedApiKey:
            body = KeyCreate.model_validate({"name": input.name, "role": input.role, "ttl_seconds": input.ttl_seconds})
            created = ctx.runtime.keys.create(ctx.principal.tenant, body.role, body.name, ttl_seconds=body.ttl_seconds)
            return CreatedApiKey(key=ApiKey.from_record(created.record), token=created.token)

        return await attempt(create)

    @fields.mutation(extensions=requires(Role.ADMIN), description="Revoke an API key")
    async def revoke_key(self, info: Info, id: strawberry.ID) -> KeyResult:
        ctx = info.context

        def revoke() -> ApiKey:
            if not str(id).isalnum():
                raise InvalidRequest("a key id is the hex part after 'cvk_'")
            record = ctx.runtime.keys.revoke(ctx.principal.tenant, str(id))
            ctx.runtime.auth.forget(str(id))
            return ApiKey.from_record(record)

        return await attempt(revoke)


def _set_archived(info: Info, name: str, archived: bool) -> WorkflowVersion:
    ctx = info.context
    service = ctx.runtime.service
    service.archive_workflow(ctx.principal.tenant, name, archived)
    return WorkflowVersion.from_record(service.get_workflow(ctx.principal.tenant, name))


def _set_enabled(info: Info, trigger_id: str, enabled: bool) -> Trigger:
    ctx = info.context
    return Trigger.from_record(actions.triggers(ctx.runtime).set_enabled(ctx.principal.tenant, trigger_id, enabled))
