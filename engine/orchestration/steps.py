"""Use cases of one step's life: claim, heartbeat, complete, fail, wake, signal, lease expiry.

Each function runs inside one store transaction (the service wraps it in ``Store.atomic``)
and records its transitions through a :class:`Recorder`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.compile import CompiledWorkflow
from engine.errors import LeaseLost, NotFound, TransitionRefused
from engine.model import RetryPolicy
from engine.orchestration import planner, progress
from engine.orchestration.recorder import Recorder
from engine.ports import Transaction
from engine.records import ExecutionRecord, StepRecord
from engine.states import Cause, ExecutionStatus, StepStatus

#: Resolves (tenant, workflow, version) to its compiled definition (cached in process).
WorkflowLoader = Callable[[str, str, int], CompiledWorkflow]

#: A step whose worker vanished is re-queued this many times beyond its retry policy, so a
#: crash does not eat the user's attempts; after that it fails as "worker lost".
LOST_WORKER_ALLOWANCE = 2

#: A timer message may arrive slightly early (clock skew between hosts); accept it.
TIMER_TOLERANCE = 0.25


@dataclass(frozen=True)
class Timing:
    """Time-related knobs the use cases need, taken from settings."""

    lease_seconds: float
    short_timer: float


@dataclass
class Claimed:
    """A step this worker now owns (until ``step.lease_until``, with ``step.lease_epoch``)."""

    step: StepRecord
    execution: ExecutionRecord
    compiled: CompiledWorkflow
    referenced: dict[str, StepRecord]


def load(
    tx: Transaction, load_workflow: WorkflowLoader, tenant: str, execution_id: str
) -> tuple[ExecutionRecord, dict[str, StepRecord]]:
    """The header and every step record of an execution, read by key inside the transaction.

    Reading by key (top-level steps, then the items of expanded foreach steps) rather than
    with a query keeps the transaction's locks on those documents only: a query in a
    transaction may lock far more (the Firestore emulator locks the whole collection group).
    """
    execution = tx.get_execution(tenant, execution_id)
    if execution is None:
        raise NotFound(f"execution {execution_id!r} not found")
    compiled = load_workflow(tenant, execution.workflow, execution.version)
    records = tx.get_steps(tenant, execution_id, list(compiled.order))
    item_keys = [
        planner.item_key(record.step_id, index)
        for record in records.values()
        if not planner.is_item(record) and record.items
        for index in range(len(record.items))
    ]
    if item_keys:
        records.update(tx.get_steps(tenant, execution_id, item_keys))
    return execution, records


def _fenced(records: dict[str, StepRecord], key: str, epoch: int) -> StepRecord:
    step = records.get(key)
    if step is None or step.status is not StepStatus.RUNNING or step.lease_epoch != epoch:
        raise LeaseLost(f"step {key!r} is no longer leased with epoch {epoch}")
    return step


def claim(
    rec: Recorder, load_workflow: WorkflowLoader, tenant: str, execution_id: str, key: str, timing: Timing
) -> Claimed | None:
    """Take a QUEUED step (or a due retry); ``None`` when there is nothing to run."""
    tx, now = rec.tx, rec.now
    execution = tx.get_execution(tenant, execution_id)
    step = tx.get_steps(tenant, execution_id, [key]).get(key)
    if execution is None or step is None or execution.status is not ExecutionStatus.RUNNING:
        return None
    compiled = load_workflow(tenant, execution.workflow, execution.version)
    due = step.wake_at is not None and step.wake_at <= now + TIMER_TOLERANCE
    if step.status is StepStatus.RETRY_WAIT and due:
        rec.move_step(step, StepStatus.QUEUED, Cause.TIMER, dispatch=False)
    elif step.status is StepStatus.WAITING and due:
        _, records = load(tx, load_workflow, tenant, execution_id)
        wake(rec, compiled, execution, records, key)
        return None
    if step.status is not StepStatus.QUEUED:
        return None
    referenced = tx.get_steps(tenant, execution_id, sorted(compiled.referenced_steps(step.step_id)))
    step.attempt += 1
    step.lease_epoch += 1
    step.lease_until = now + timing.lease_seconds
    step.started_at = now
    step.error = None
    rec.move_step(step, StepStatus.RUNNING, Cause.CLAIM)
    return Claimed(step, execution, compiled, referenced)


def heartbeat(rec: Recorder, tenant: str, execution_id: str, key: str, epoch: int, timing: Timing) -> None:
    """Extend the lease; ``LeaseLost`` tells the worker to stop."""
    step = _fenced(rec.tx.get_steps(tenant, execution_id, [key]), key, epoch)
    step.lease_until = rec.now + timing.lease_seconds
    rec.tx.put_step(step)


def complete(
    rec: Recorder,
    load_workflow: WorkflowLoader,
    tenant: str,
    execution_id: str,
    key: str,
    epoch: int,
    output: Any,
) -> None:
    """Record a step's success (fenced by ``epoch``) and move the execution forward."""
    execution, records = load(rec.tx, load_workflow, tenant, execution_id)
    step = _fenced(records, key, epoch)
    step.output = output
    rec.move_step(step, StepStatus.SUCCEEDED, Cause.COMPLETE)
    _after(rec, load_workflow(tenant, execution.workflow, execution.version), execution, records, step)


def park(
    rec: Recorder,
    tenant: str,
    execution_id: str,
    key: str,
    epoch: int,
    *,
    until: float | None,
    on_wake: str,
    match: dict[str, Any],
    timing: Timing,
) -> None:
    """Put a running step into WAITING until a timer fires or a signal arrives."""
    step = _fenced(rec.tx.get_steps(tenant, execution_id, [key]), key, epoch)
    step.wake_at = until
    step.wait = {"on_wake": on_wake, "match": match}
    step.lease_until = None
    rec.move_step(step, StepStatus.WAITING, Cause.COMPLETE, {"until": until})
    if until is not None and until - rec.now <= timing.short_timer:
        rec.queue_dispatch(step, countdown=max(0.0, until - rec.now))


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """Delay before attempt ``attempt + 1``: fixed or exponential, capped, with equal jitter."""
    delay = policy.initial if policy.backoff == "fixed" else policy.initial * 2 ** (attempt - 1)
    delay = min(delay, policy.max)
    return delay / 2 + random.uniform(0, delay / 2) if policy.jitter else delay  # noqa: S311


def fail(
    rec: Recorder,
    load_workflow: WorkflowLoader,
    tenant: str,
    execution_id: str,
    key: str,
    epoch: int,
    error: dict[str, Any],
    retryable: bool,
    timing: Timing,
) -> None:
    """Record a failed attempt: wait and retry per the step's policy, or fail the step."""
    execution, records = load(rec.tx, load_workflow, tenant, execution_id)
    step = _fenced(records, key, epoch)
    compiled = load_workflow(tenant, execution.workflow, execution.version)
    policy = compiled.step(step.step_id).retry
    step.error = error
    if retryable and error.get("type") not in policy.non_retryable and step.attempt < policy.max_attempts:
        delay = backoff_delay(policy, step.attempt)
        step.wake_at = rec.now + delay
        rec.move_step(step, StepStatus.RETRY_WAIT, Cause.COMPLETE, {"error": error, "delay": round(delay, 3)})
        if delay <= timing.short_timer:
            rec.queue_dispatch(step, countdown=delay)
        return
    rec.move_step(step, StepStatus.FAILED, Cause.COMPLETE, {"error": error})
    _after(rec, compiled, execution, records, step)


def _after(
    rec: Recorder,
    compiled: CompiledWorkflow,
    execution: ExecutionRecord,
    records: dict[str, StepRecord],
    step: StepRecord,
) -> None:
    if planner.is_item(step):
        progress.item_finished(rec, compiled, execution, records, step)
    progress.advance(rec, compiled, execution, records)


def wake(
    rec: Recorder, compiled: CompiledWorkflow, execution: ExecutionRecord, records: dict[str, StepRecord], key: str
) -> None:
    """A due timer: a retry goes back to the queue; a wait succeeds (or fails on a timeout)."""
    step = records[key]
    if step.wake_at is None or step.wake_at > rec.now + TIMER_TOLERANCE:
        return
    if step.status is StepStatus.RETRY_WAIT:
        rec.move_step(step, StepStatus.QUEUED, Cause.TIMER)
        return
    if step.status is not StepStatus.WAITING or execution.status is not ExecutionStatus.RUNNING:
        return
    if (step.wait or {}).get("on_wake") == "fail":
        step.error = progress.error_info("timed out waiting", "WaitTimeout")
        rec.move_step(step, StepStatus.FAILED, Cause.TIMER, {"error": step.error})
    else:
        rec.move_step(step, StepStatus.SUCCEEDED, Cause.TIMER)
    _after(rec, compiled, execution, records, step)


def signal(
    rec: Recorder, load_workflow: WorkflowLoader, tenant: str, execution_id: str, key: str, payload: Any
) -> StepRecord:
    """Deliver a payload to a WAITING step: it succeeds with the payload as its output."""
    execution, records = load(rec.tx, load_workflow, tenant, execution_id)
    step = records.get(key)
    if step is None:
        raise NotFound(f"step {key!r} not found in execution {execution_id!r}")
    if step.status is not StepStatus.WAITING or execution.status is not ExecutionStatus.RUNNING:
        raise TransitionRefused(f"step {key!r} is {step.status}, not WAITING; it cannot take a signal")
    step.output = payload
    rec.move_step(step, StepStatus.SUCCEEDED, Cause.SIGNAL)
    _after(rec, load_workflow(tenant, execution.workflow, execution.version), execution, records, step)
    return step


def expire_lease(rec: Recorder, load_workflow: WorkflowLoader, tenant: str, execution_id: str, key: str) -> None:
    """The worker holding the step vanished: re-queue it, or fail it once allowances are spent."""
    execution, records = load(rec.tx, load_workflow, tenant, execution_id)
    step = records.get(key)
    if step is None or step.status is not StepStatus.RUNNING or step.lease_until is None:
        return
    if step.lease_until > rec.now:
        return
    compiled = load_workflow(tenant, execution.workflow, execution.version)
    step.lease_epoch += 1
    if step.attempt < compiled.step(step.step_id).retry.max_attempts + LOST_WORKER_ALLOWANCE:
        rec.move_step(step, StepStatus.QUEUED, Cause.LEASE_EXPIRED, {"reason": "lease expired"})
        return
    step.error = progress.error_info("the worker running this step was lost", "WorkerLost")
    rec.move_step(step, StepStatus.FAILED, Cause.LEASE_EXPIRED, {"error": step.error})
    _after(rec, compiled, execution, records, step)


def redispatch(rec: Recorder, tenant: str, execution_id: str, key: str, stale_before: float) -> None:
    """Send a QUEUED step again whose message may have been lost (transactional outbox)."""
    step = rec.tx.get_steps(tenant, execution_id, [key]).get(key)
    if step is None or step.status is not StepStatus.QUEUED:
        return
    if step.dispatched_at is not None and step.dispatched_at > stale_before:
        return
    rec.queue_dispatch(step)
    rec.tx.put_step(step)
