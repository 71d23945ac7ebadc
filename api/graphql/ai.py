"""GraphQL fields of AI steps: stored prompt templates and bandit rewards (twins of
``/v1/prompts`` and ``POST /v1/executions/{id}/rewards``)."""

from __future__ import annotations

from typing import Annotated

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.types import Info

from api.graphql import fields
from api.graphql.mutations import attempt
from api.graphql.permissions import requires
from api.graphql.queries import found_or_none, page_limit
from api.graphql.types.problem import Problem
from api.graphql.types.prompt import AppliedPrompt, PromptPage, PromptVersion, RewardResult
from engine.auth import Role
from engine.errors import InvalidRequest

ApplyPromptResult = Annotated[AppliedPrompt | Problem, strawberry.union("ApplyPromptResult")]
RewardDecisionResult = Annotated[RewardResult | Problem, strawberry.union("RewardDecisionResult")]


@strawberry.type
class AiQuery:
    @fields.field(extensions=requires(Role.VIEWER), description="Stored prompts (newest version of each)")
    async def prompts(self, info: Info, cursor: str | None = None, limit: int = 50) -> PromptPage:
        ctx = info.context
        page = await run_in_threadpool(
            lambda: ctx.runtime.prompts.list(ctx.principal.tenant, cursor=cursor, limit=page_limit(limit))
        )
        return PromptPage(items=[PromptVersion.from_record(r) for r in page.items], next_cursor=page.next_cursor)

    @fields.field(extensions=requires(Role.VIEWER), description="A stored prompt's version (newest by default)")
    async def prompt(self, info: Info, name: str, version: int | None = None) -> PromptVersion | None:
        ctx = info.context
        record = await found_or_none(ctx.runtime.prompts.get, ctx.principal.tenant, name, version)
        return PromptVersion.from_record(record) if record is not None else None

    @fields.field(extensions=requires(Role.VIEWER), description="Versions of a stored prompt, newest first")
    async def prompt_versions(self, info: Info, name: str, cursor: str | None = None, limit: int = 50) -> PromptPage:
        ctx = info.context
        page = await run_in_threadpool(
            lambda: ctx.runtime.prompts.versions(ctx.principal.tenant, name, cursor=cursor, limit=page_limit(limit))
        )
        return PromptPage(items=[PromptVersion.from_record(r) for r in page.items], next_cursor=page.next_cursor)


@strawberry.type
class AiMutation:
    @fields.mutation(
        extensions=requires(Role.EDITOR), description="Save a prompt template as its next version (unchanged: none)"
    )
    async def apply_prompt(
        self, info: Info, name: str, template: str, system: str | None = None, description: str | None = None
    ) -> ApplyPromptResult:
        ctx = info.context

        def apply() -> AppliedPrompt:
            record, created = ctx.runtime.prompts.apply(ctx.principal.tenant, name, template, system, description)
            return AppliedPrompt(prompt=PromptVersion.from_record(record), created=created)

        return await attempt(apply)

    @fields.mutation(
        extensions=requires(Role.OPERATOR),
        description="Reward the decision of an ai.route step (strategy bandit): 1 success, 0 failure, or between",
    )
    async def reward_decision(self, info: Info, id: strawberry.ID, step: str, reward: float) -> RewardDecisionResult:
        ctx = info.context

        def reward_it() -> RewardResult:
            if not 0 <= reward <= 1:
                raise InvalidRequest("reward out of range: it is between 0 and 1")
            return RewardResult(counted=ctx.runtime.service.rewards.count(ctx.principal.tenant, str(id), step, reward))

        return await attempt(reward_it)
