"""Events: one per transition, written to the history and fanned out live.

Event ids sort by time (microseconds, then a per-process sequence), so history listings and
``after`` cursors follow the order in which transitions were recorded.
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from engine.records import EventRecord, ExecutionRecord, StepRecord

_sequence = itertools.count()


def new_event_id(at: float) -> str:
    return f"{int(at * 1_000_000):016x}{next(_sequence) % 0x10000:04x}{secrets.token_hex(3)}"


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
