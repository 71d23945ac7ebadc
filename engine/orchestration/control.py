"""Use cases over a whole execution: start, cancel, retry, pause, resume, time out."""

from __future__ import annotations

import uuid
from typing import Any

from engine.compile import CompiledWorkflow
from engine.errors import TransitionRefused
from engine.orchestration import planner, progress, steps
from engine.orchestration.recorder import Recorder
from engine.orchestration.snapshot import Snapshot, load_whole
from engine.orchestration.workflows import Workflows
from engine.records import ExecutionRecord, StepRecord
from engine.states import EXECUTION_TERMINAL, Cause, ExecutionStatus, StepStatus, propose


def new_execution_id() -> str:
    # Random, never monotonic: Firestore spreads random ids across its key range.
    return uuid.uuid4().hex


def start(
    rec: Recorder,
    compiled: CompiledWorkflow,
    *,
    tenant: str,
    version: int,
    input: Any,
    idempotency_key: str | None = None,
    labels: dict[str, str] | None = None,
    parent: dict[str, Any] | None = None,
    trigger_id: str | None = None,
    execution_id: str | None = None,
) -> tuple[ExecutionRecord, bool]:
    """Create the execution and its first ready steps; an idempotency key returns the original."""
    if idempotency_key is not None:
        existing = rec.tx.find_execution_by_key(tenant, idempotency_key)
        if existing is not None:
            return existing, False
    definition = compiled.definition
    execution = ExecutionRecord(
        id=execution_id or new_execution_id(),
        tenant=tenant,
        workflow=definition.name,
        version=version,
        status=ExecutionStatus.RUNNING,
        input=input,
        created_at=rec.now,
        updated_at=rec.now,
        deadline_at=rec.now + definition.deadline if definition.deadline else None,
        idempotency_key=idempotency_key,
        labels=labels or {},
        parent=parent,
        trigger_id=trigger_id,
    )
    rec.create_execution(execution, {"workflow": definition.name, "version": version})
    progress.advance(rec, Snapshot(rec.tx, compiled, execution, {}, whole=True))
    return execution, True


def _refuse_unless(execution: ExecutionRecord, target: ExecutionStatus, cause: Cause) -> None:
    decision = propose(execution.status, target, cause)
    if not decision.accepted:
        raise TransitionRefused(f"execution {execution.id} is {execution.status}: {decision.reason}")


def cancel(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    reason: str = "cancelled by request",
) -> ExecutionRecord:
    snap = load_whole(rec.tx, workflows, tenant, execution_id)
    execution, records = snap.execution, snap.records
    _refuse_unless(execution, ExecutionStatus.CANCELLED, Cause.CANCEL)
    progress.end_execution(rec, execution, records, ExecutionStatus.CANCELLED, Cause.CANCEL, reason)
    return execution


def time_out(rec: Recorder, workflows: Workflows, tenant: str, execution_id: str) -> None:
    """The execution's deadline passed (called by the reconciler)."""
    snap = load_whole(rec.tx, workflows, tenant, execution_id)
    execution, records = snap.execution, snap.records
    due = execution.deadline_at is not None and execution.deadline_at <= rec.now
    if execution.status in EXECUTION_TERMINAL or not due:
        return
    progress.end_execution(rec, execution, records, ExecutionStatus.TIMED_OUT, Cause.DEADLINE, "deadline passed")


def pause(rec: Recorder, workflows: Workflows, tenant: str, execution_id: str) -> ExecutionRecord:
    """Stop claiming new steps; running steps finish and their successors wait in QUEUED."""
    execution = load_whole(rec.tx, workflows, tenant, execution_id).execution
    _refuse_unless(execution, ExecutionStatus.PAUSED, Cause.PAUSE)
    rec.move_execution(execution, ExecutionStatus.PAUSED, Cause.PAUSE)
    return execution


def resume(rec: Recorder, workflows: Workflows, tenant: str, execution_id: str) -> ExecutionRecord:
    snap = load_whole(rec.tx, workflows, tenant, execution_id)
    execution, records = snap.execution, snap.records
    _refuse_unless(execution, ExecutionStatus.RUNNING, Cause.RESUME)
    rec.move_execution(execution, ExecutionStatus.RUNNING, Cause.RESUME)
    for record in records.values():
        if record.status is StepStatus.QUEUED:
            rec.queue_dispatch(record)
            rec.tx.put_step(record)
    for record in [r for r in records.values() if r.status is StepStatus.WAITING and (r.wait or {}).get("signal_kept")]:
        steps.deliver_kept_signal(rec, snap, record)
    progress.advance(rec, snap)
    return execution


def retry(rec: Recorder, workflows: Workflows, tenant: str, execution_id: str) -> ExecutionRecord:
    """Run a failed or timed-out execution again from its failed steps, keeping every success."""
    snap = load_whole(rec.tx, workflows, tenant, execution_id)
    execution, records = snap.execution, snap.records
    _refuse_unless(execution, ExecutionStatus.RUNNING, Cause.RETRY)
    if execution.expires_at is not None and execution.expires_at <= rec.now:
        # Its retention has passed: the purge may already have deleted some of its records.
        raise TransitionRefused(f"execution {execution_id} is past its retention and being deleted")
    execution.run += 1
    execution.error = None
    execution.output = None
    rec.move_execution(execution, ExecutionStatus.RUNNING, Cause.RETRY, {"run": execution.run})
    for record in list(records.values()):
        if record.status in (StepStatus.FAILED, StepStatus.CANCELLED):
            _revive(rec, snap, record)
    progress.advance(rec, snap)
    return execution


def _revive(rec: Recorder, snap: Snapshot, record: StepRecord) -> None:
    record.attempt = 0
    record.error = None
    record.run = snap.execution.run
    if (
        record.index is None
        and not planner.is_foreach_parent(record)
        and snap.compiled.step(record.step_id).foreach is not None
    ):
        # The foreach expression itself failed: plan the step afresh (``advance`` creates it).
        rec.withdraw_step(record, Cause.RETRY)
        del snap.records[record.key]
        return
    if planner.is_foreach_parent(record):
        # A container, not a claimable step: it resumes in RUNNING and re-runs failed items.
        record.lease_until = rec.now + rec.fanin_check_seconds
        rec.move_step(record, StepStatus.RUNNING, Cause.RETRY, {"reason": "retrying failed items"})
        return
    rec.move_step(record, StepStatus.QUEUED, Cause.RETRY)
