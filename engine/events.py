"""Events: one per transition, written to the history and fanned out live.

Event ids sort by time (microseconds, then a per-process sequence), so history listings and
``after`` cursors follow the order in which transitions were recorded.
"""

from __future__ import annotations

import itertools
import re
import secrets
from typing import Any

from engine.errors import InvalidRequest
from engine.records import EventRecord, ExecutionRecord, StepRecord

_sequence = itertools.count()

#: What :func:`new_event_id` makes: 16 hex digits of microseconds, 4 of sequence, 6 random.
_EVENT_ID = re.compile(r"[0-9a-f]{26}")


def new_event_id(at: float) -> str:
    return f"{int(at * 1_000_000):016x}{next(_sequence) % 0x10000:04x}{secrets.token_hex(3)}"


def check_history_cursor(after: str) -> None:
    """Refuse an ``after`` cursor that is no event id (``InvalidRequest``, a 422).

    History pages by event id, so any string would page *somewhere* (``zzz`` sorts after every
    id: an empty page); a cursor this API never handed out is the client's mistake, not the end.
    """
    if not _EVENT_ID.fullmatch(after):
        raise InvalidRequest(f"invalid history cursor {after!r}: expected an event id from the history (26 hex digits)")


def token_event(tenant: str, execution_id: str, step_key: str, attempt: int, at: float, text: str) -> EventRecord:
    """Model output tokens of an AI step (``stream: true``): sent on the live stream only, never
    stored in the history (they would flood it; the answer is recorded with the step)."""
    return EventRecord(
        id=new_event_id(at),
        execution_id=execution_id,
        tenant=tenant,
        type="step.tokens",
        at=at,
        step_key=step_key,
        attempt=attempt,
        data={"text": text},
    )


def unclaimed_running_event(step: StepRecord, at: float) -> EventRecord:
    """``step.running`` for a step running before its claim, sent on the live stream only.

    A first delivery runs before its claim (docs/architecture.md), so the history records
    ``step.running`` only when the step is claimed: by its outcome, or by the lease keeper
    once it has run ``unclaimed_run_seconds``. Watchers get this one as soon as the run has
    lasted a moment; ``data.unclaimed`` marks it, and the history keeps exactly one
    ``step.running`` per attempt.
    """
    return EventRecord(
        id=new_event_id(at),
        execution_id=step.execution_id,
        tenant=step.tenant,
        type="step.running",
        at=at,
        step_key=step.key,
        status="RUNNING",
        attempt=step.attempt,
        data={"unclaimed": True},
    )


def execution_event(execution: ExecutionRecord, at: float, data: dict[str, Any] | None = None) -> EventRecord:
    return EventRecord(
        id=new_event_id(at),
        execution_id=execution.id,
        tenant=execution.tenant,
        type=f"execution.{execution.status.lower()}",
        at=at,
        status=str(execution.status),
        data=data or {},
    )


def step_event(step: StepRecord, at: float, data: dict[str, Any] | None = None) -> EventRecord:
    return EventRecord(
        id=new_event_id(at),
        execution_id=step.execution_id,
        tenant=step.tenant,
        type=f"step.{step.status.lower()}",
        at=at,
        step_key=step.key,
        status=str(step.status),
        attempt=step.attempt,
        data=data or {},
    )
