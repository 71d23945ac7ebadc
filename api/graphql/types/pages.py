"""Pages of listings: items and an opaque cursor for the next page."""

from __future__ import annotations

import strawberry

from api.graphql.types.execution import Execution
from api.graphql.types.trigger import Trigger
from api.graphql.types.workflow import WorkflowVersion


@strawberry.type
class ExecutionPage:
    items: list[Execution]
    next_cursor: str | None


@strawberry.type
class WorkflowPage:
    items: list[WorkflowVersion]
    next_cursor: str | None


@strawberry.type
class TriggerPage:
    items: list[Trigger]
    next_cursor: str | None
