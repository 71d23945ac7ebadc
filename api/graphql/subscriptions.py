"""``executionEvents``: the progress stream over graphql-transport-ws."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import strawberry
from strawberry.types import Info

from api.graphql import fields
from api.graphql.permissions import requires
from api.graphql.types.problem import Problem
from api.graphql.types.stream import ExecutionChange, ExecutionSnapshot, StreamHeartbeat, to_graphql
from api.streams import ExecutionFeed, SlowConsumer
from engine.auth import Role
from engine.errors import ConveyorError

StreamMessage = Annotated[
    ExecutionSnapshot | ExecutionChange | StreamHeartbeat | Problem, strawberry.union("StreamMessage")
]


@strawberry.type
class Subscription:
    @fields.subscription(
        extensions=requires(Role.VIEWER),
        description="A snapshot (unless resuming), then every event; resume with the last `cursor` as `after`",
    )
    async def execution_events(
        self, info: Info, execution_id: strawberry.ID, after: str | None = None
    ) -> AsyncGenerator[StreamMessage, None]:
        ctx = info.context
        feed = ExecutionFeed(ctx.runtime, ctx.credential, str(execution_id), after)
        metrics = ctx.runtime.metrics
        metrics.streams.labels("graphql").inc()
        try:
            await feed.check()
            async for message in feed.messages():
                yield to_graphql(message)
        except SlowConsumer as exc:
            metrics.slow_consumers.labels("graphql").inc()
            yield Problem(code="slow-consumer", status="429", message=str(exc), problems=[])
        except ConveyorError as exc:
            yield Problem.from_error(exc)
        finally:
            metrics.streams.labels("graphql").dec()
