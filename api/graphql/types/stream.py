"""Messages of the ``executionEvents`` subscription (same feed as the WebSocket and SSE streams)."""

from __future__ import annotations

import strawberry

from api.graphql.types.event import Event
from api.graphql.types.execution import Execution
from api.graphql.types.step import Step
from api.streams import Change, Message, Snapshot


@strawberry.type(description="The execution and its steps; `reset` when the cursor had expired")
class ExecutionSnapshot:
    cursor: str
    reset: bool
    execution: Execution
    steps: list[Step]


@strawberry.type
class ExecutionChange:
    cursor: str
    event: Event


@strawberry.type
class StreamHeartbeat:
    cursor: str


def to_graphql(message: Message) -> ExecutionSnapshot | ExecutionChange | StreamHeartbeat:
    if isinstance(message, Snapshot):
        return ExecutionSnapshot(
            cursor=message.cursor,
            reset=message.reset,
            execution=Execution.from_record(message.execution),
            steps=[Step.from_record(s) for s in message.steps],
        )
    if isinstance(message, Change):
        return ExecutionChange(cursor=message.cursor, event=Event.from_record(message.event))
    return StreamHeartbeat(cursor=message.cursor)
