"""External events published to Conveyor: accepted durably, deduplicated by id.

Routing an accepted event to event triggers and waiting steps is the job of the trigger
router (a separate component); this module only defines what an accepted event is, the
:class:`Inbox` port it is appended to, and the use case that accepts one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine import payloads
from engine.errors import InvalidRequest
from engine.ports import Clock


@dataclass(frozen=True)
class InboundEvent:
    """One external event of one tenant; ``id`` is the deduplication key."""

    id: str
    tenant: str
    type: str
    received_at: float
    source: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "type": self.type,
            "source": self.source,
            "data": self.data,
            "received_at": self.received_at,
        }


class Inbox(Protocol):
    """Where accepted external events wait for the trigger router."""

    def append(self, event: InboundEvent) -> bool:
        """Append ``event`` unless its id was seen before; True when it was appended."""
        ...


@dataclass(frozen=True)
class Accepted:
    event: InboundEvent
    duplicate: bool


def accept_event(
    inbox: Inbox,
    clock: Clock,
    tenant: str,
    *,
    type: str,
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
    source: str | None = None,
    max_bytes: int,
) -> Accepted:
    """Validate and append one event; a repeated ``event_id`` is acknowledged, not appended again."""
    if not type.strip():
        raise InvalidRequest("an event needs a type")
    payload = data or {}
    payloads.check_payload(payload, max_bytes, "event data")
    event = InboundEvent(
        id=event_id or uuid.uuid4().hex,
        tenant=tenant,
        type=type,
        received_at=clock.now(),
        source=source,
        data=payload,
    )
    appended = inbox.append(event)
    return Accepted(event, duplicate=not appended)
