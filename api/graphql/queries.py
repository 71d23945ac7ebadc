"""Root query fields; each declares the role it needs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ParamSpec, TypeVar

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.types import Info

from api import actions
from api.convert import search_filters
from api.deps import MAX_PAGE_SIZE
from api.graphql import fields
from api.graphql.permissions import requires
from api.graphql.types.decision import BanditEstimates
from api.graphql.types.enums import ExecutionStatus
from api.graphql.types.execution import Execution, ExecutionCounts
from api.graphql.types.key import ApiKey
from api.graphql.types.pages import ExecutionPage, TriggerPage, WorkflowPage
from api.graphql.types.session import WhoAmI
from api.graphql.types.trigger import Trigger
from api.graphql.types.workflow import WorkflowVersion
from engine.auth import Role
from engine.errors import InvalidRequest, NotFound

P = ParamSpec("P")
T = TypeVar("T")


def page_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    return limit


async def found_or_none(read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """``read`` run in the thread pool, or None if it raises ``NotFound`` (the "one X, or null" fields)."""
    try:
        return await run_in_threadpool(read, *args, **kwargs)
    except NotFound:
        return None


@strawberry.type
class Query:
    @fields.field(extensions=requires(Role.VIEWER), description="The caller's tenant and role")
    async def whoami(self, info: Info) -> WhoAmI:
        principal = info.context.principal
        return WhoAmI(tenant=principal.tenant, role=principal.role, subject=principal.subject, kind=principal.kind)

    @fields.field(extensions=requires(Role.VIEWER), description="Workflows (latest version of each)")
    async def workflows(self, info: Info, cursor: str | None = None, limit: int = 50) -> WorkflowPage:
        ctx = info.context
        page = await run_in_threadpool(
            ctx.runtime.service.list_workflows, ctx.principal.tenant, cursor=cursor, limit=page_limit(limit)
        )
        return WorkflowPage(items=[WorkflowVersion.from_record(r) for r in page.items], next_cursor=page.next_cursor)

    @fields.field(extensions=requires(Role.VIEWER), description="A workflow version (latest by default)")
    async def workflow(self, info: Info, name: str, version: int | None = None) -> WorkflowVersion | None:
        ctx = info.context
        record = await found_or_none(ctx.runtime.service.get_workflow, ctx.principal.tenant, name, version)
        return WorkflowVersion.from_record(record) if record is not None else None

    @fields.field(extensions=requires(Role.VIEWER), description="Versions of a workflow, newest first")
    async def workflow_versions(
        self, info: Info, name: str, cursor: str | None = None, limit: int = 50
    ) -> WorkflowPage:
        ctx = info.context
        page = await run_in_threadpool(
            lambda: ctx.runtime.service.list_workflow_versions(
                ctx.principal.tenant, name, cursor=cursor, limit=page_limit(limit)
            )
        )
        return WorkflowPage(items=[WorkflowVersion.from_record(r) for r in page.items], next_cursor=page.next_cursor)

    @fields.field(
        extensions=requires(Role.VIEWER), description="What the bandit of an ai.route step has learned, per route"
    )
    async def decisions(self, info: Info, workflow: str, step: str) -> BanditEstimates | None:
        ctx = info.context
        found = await found_or_none(ctx.runtime.service.rewards.estimates, ctx.principal.tenant, workflow, step)
        return BanditEstimates.from_estimates(found) if found is not None else None

    @fields.field(extensions=requires(Role.ADMIN), description="API keys of the caller's tenant (never secrets)")
    async def keys(self, info: Info) -> list[ApiKey]:
        ctx = info.context
        records = await run_in_threadpool(ctx.runtime.keys.for_tenant, ctx.principal.tenant)
        return [ApiKey.from_record(r) for r in records]

    @fields.field(
        extensions=requires(Role.VIEWER),
        description="Executions, newest first; filters combine with AND (`labels`: `key:value` texts)",
    )
    async def executions(
        self,
        info: Info,
        status: ExecutionStatus | None = None,
        workflow: str | None = None,
        version: int | None = None,
        labels: list[str] | None = None,
        trigger: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> ExecutionPage:
        ctx = info.context
        filters = search_filters(workflow, version, labels, trigger, created_after, created_before)
        page = await run_in_threadpool(
            lambda: ctx.runtime.service.list_executions(
                ctx.principal.tenant, status=status, cursor=cursor, limit=page_limit(limit), **filters
            )
        )
        return ExecutionPage(items=[Execution.from_record(r) for r in page.items], next_cursor=page.next_cursor)

    @fields.field(extensions=requires(Role.VIEWER), description="How many executions match the filters, per status")
    async def execution_counts(
        self,
        info: Info,
        workflow: str | None = None,
        version: int | None = None,
        labels: list[str] | None = None,
        trigger: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> ExecutionCounts:
        ctx = info.context
        filters = search_filters(workflow, version, labels, trigger, created_after, created_before)
        counts = await run_in_threadpool(lambda: ctx.runtime.service.count_executions(ctx.principal.tenant, **filters))
        return ExecutionCounts.build(counts)

    @fields.field(extensions=requires(Role.VIEWER), description="One execution, or null")
    async def execution(self, info: Info, id: strawberry.ID) -> Execution | None:
        ctx = info.context
        record = await found_or_none(ctx.runtime.service.get_execution, ctx.principal.tenant, str(id))
        return Execution.from_record(record) if record is not None else None

    @fields.field(extensions=requires(Role.VIEWER), description="Triggers")
    async def triggers(self, info: Info, cursor: str | None = None, limit: int = 50) -> TriggerPage:
        ctx = info.context
        page = await run_in_threadpool(
            actions.triggers(ctx.runtime).list_page, ctx.principal.tenant, cursor=cursor, limit=page_limit(limit)
        )
        return TriggerPage(items=[Trigger.from_record(r) for r in page.items], next_cursor=page.next_cursor)

    @fields.field(extensions=requires(Role.VIEWER), description="One trigger, or null")
    async def trigger(self, info: Info, id: strawberry.ID) -> Trigger | None:
        ctx = info.context
        record = await found_or_none(actions.triggers(ctx.runtime).get, ctx.principal.tenant, str(id))
        return Trigger.from_record(record) if record is not None else None
