"""``deadLetters``: the recent dead letters of the Pub/Sub bridge (twin of ``GET /v1/events/dead-letters``)."""

from __future__ import annotations

from datetime import datetime

import strawberry
from starlette.concurrency import run_in_threadpool
from strawberry.scalars import JSON
from strawberry.types import Info

from api.graphql import fields
from api.graphql.permissions import requires
from api.schemas.events import DeadLetter as DeadLetterModel
from engine.auth import Role
from engine.errors import InvalidRequest

MAX_DEAD_LETTERS = 200


@strawberry.type(description="A message the Pub/Sub bridge could not turn into an event, and why")
class DeadLetter:
    message_id: str
    subscription: str
    reason: str
    detail: str
    at: datetime
    attributes: JSON
    data: str = strawberry.field(description="The message body as text, at most its first 4 KiB")
    data_bytes: int


@strawberry.type
class DeadLetterQuery:
    @fields.field(extensions=requires(Role.VIEWER), description="Recent dead letters, most recent first")
    async def dead_letters(self, info: Info, limit: int = 50) -> list[DeadLetter]:
        if not 1 <= limit <= MAX_DEAD_LETTERS:
            raise InvalidRequest(f"limit must be between 1 and {MAX_DEAD_LETTERS}")
        ctx = info.context
        found = await run_in_threadpool(ctx.runtime.dead_letters.recent, ctx.principal.tenant, limit)
        return [DeadLetter(**DeadLetterModel.from_record(r).model_dump()) for r in found]
