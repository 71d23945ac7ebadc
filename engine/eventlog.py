"""The external event log: what an accepted event is, and where events and waiting steps meet.

Every external event (``POST /v1/events``, the Pub/Sub bridge) is accepted by one use case
(:func:`accept`): validated, then written to its tenant's event log in the store, once per
event id. Routing it to event triggers and waiting steps happens after that commit
(:mod:`engine.router`); an event stays marked unrouted until routing finished, so one whose
router died is routed by the reconciler.

An event reaches a waiting step by its *route*: the digest of its type and correlation key.
A ``wait_for_event`` step registers a waiter on the route of the type and key it waits for.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from typing import Any, Required, TypedDict

from engine import payloads
from engine.errors import InvalidRequest
from engine.ports import Transaction
from engine.records import InboundEventRecord

#: Longest event id, type, source or correlation key accepted (Firestore ids stay short).
MAX_NAME_CHARS = 200


def route_of(event_type: str, correlation_key: str | None) -> str:
    """The route on which events of ``event_type`` with ``correlation_key`` meet their waiters."""
    text = f"{event_type}\x00{'' if correlation_key is None else correlation_key}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


class EventFields(TypedDict, total=False):
    """What a source says about an event (see :func:`new_event`); only ``type`` is required."""

    type: Required[str]
    data: dict[str, Any] | None
    event_id: str | None
    source: str | None
    correlation_key: str | None


@dataclass(frozen=True)
class TriggerStart:
    """An execution an event trigger starts: its workflow, mapped input and idempotency key.

    ``error``: why the trigger cannot start it (its ``match`` or input mapping failed on the
    event); nothing starts, and the reason becomes the trigger's ``last_error``.
    """

    trigger_id: str
    workflow: str
    input: Any
    idempotency_key: str
    error: str | None = None


@dataclass(frozen=True)
class Accepted:
    """The event as stored; ``duplicate`` when its id had been accepted before."""

    event: InboundEventRecord
    duplicate: bool


def new_event(
    tenant: str,
    *,
    type: str,
    accepted_at: float,
    data: dict[str, Any] | None = None,
    event_id: str | None = None,
    source: str | None = None,
    correlation_key: str | None = None,
    max_bytes: int,
) -> InboundEventRecord:
    """Validate an external event; ``InvalidRequest`` or ``PayloadTooLarge`` if it cannot be accepted."""
    if not type.strip():
        raise InvalidRequest("an event needs a type")
    for name, value in (("type", type), ("id", event_id), ("source", source), ("correlation_key", correlation_key)):
        if value is not None and (not value or len(value) > MAX_NAME_CHARS):
            raise InvalidRequest(f"the event {name} must be 1 to {MAX_NAME_CHARS} characters")
    payload = {} if data is None else data
    if not isinstance(payload, dict):
        raise InvalidRequest("event data must be a JSON object")
    payloads.check_payload(payload, max_bytes, "event data")
    return InboundEventRecord(
        tenant=tenant,
        id=event_id or uuid.uuid4().hex,
        type=type,
        accepted_at=accepted_at,
        data=payload,
        source=source,
        correlation_key=correlation_key,
        route=route_of(type, correlation_key),
    )


def accept(tx: Transaction, event: InboundEventRecord, *, routed: bool = False) -> Accepted:
    """Append ``event`` to its tenant's log unless its id is there already (then return that one).

    ``routed`` when this same transaction also does all its routing.
    """
    existing = tx.get_inbound_event(event.tenant, event.id)
    if existing is not None:
        return Accepted(existing, duplicate=True)
    stored = replace(event, routed=routed)
    tx.put_inbound_event(stored)
    return Accepted(stored, duplicate=False)


def accept_many(tx: Transaction, events: list[InboundEventRecord]) -> list[Accepted]:
    """:func:`accept` for each event, in order (a second copy of an id is a duplicate of the first).

    The stored events are read in one batched read per tenant; an event no step can wait for
    (no correlation key) is stored routed, as its transaction does all its routing.
    """
    known: dict[tuple[str, str], InboundEventRecord] = {}
    for tenant in dict.fromkeys(event.tenant for event in events):
        ids = list(dict.fromkeys(event.id for event in events if event.tenant == tenant))
        known.update(((tenant, id_), record) for id_, record in tx.get_inbound_events(tenant, ids).items())
    accepted = []
    for event in events:
        existing = known.get((event.tenant, event.id))
        if existing is not None:
            accepted.append(Accepted(existing, duplicate=True))
            continue
        stored = replace(event, routed=event.correlation_key is None)
        tx.put_inbound_event(stored)
        known[(event.tenant, event.id)] = stored
        accepted.append(Accepted(stored, duplicate=False))
    return accepted


def mark_routed(tx: Transaction, tenant: str, event_id: str) -> None:
    """Record that triggers and waiters have been offered the event."""
    event = tx.get_inbound_event(tenant, event_id)
    if event is not None and not event.routed:
        event.routed = True
        tx.put_inbound_event(event)


def event_view(event: InboundEventRecord) -> dict[str, Any]:
    """The ``event`` variable of CEL filters, input mappings and a waiting step's output."""
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "correlation_key": event.correlation_key,
        "data": event.data,
        "accepted_at": event.accepted_at,
    }
