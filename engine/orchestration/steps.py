"""Use cases of one step's life: claim, heartbeat, complete, fail, wake, signal, lease expiry.

Each function runs inside one store transaction (the service wraps it in ``Store.atomic``)
and records its transitions through a :class:`Recorder`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import jsonschema

from engine import steptypes
from engine.compile import CompiledWorkflow
from engine.errors import ExpressionError, InputInvalid, LeaseLost, NotFound, Problem, TransitionRefused
from engine.expressions import compile_expression
from engine.model import RetryPolicy
from engine.orchestration import planner, progress
from engine.orchestration.recorder import Recorder
from engine.orchestration.snapshot import Snapshot, load_whole, open_snapshot, planning_keys
from engine.orchestration.workflows import Workflows
from engine.ports import Dispatch, Reads, Transaction
from engine.records import ExecutionRecord, SignalRecord, StepRecord, WaiterRecord
from engine.states import STEP_TERMINAL, Cause, ExecutionStatus, StepStatus

#: A step whose worker vanished is re-queued this many times beyond its retry policy, so a
#: crash does not eat the user's attempts; after that it fails as "worker lost".
LOST_WORKER_ALLOWANCE = 2


@dataclass(frozen=True)
class Timing:
    """Time-related knobs the use cases need, taken from settings."""

    lease_seconds: float
    short_timer: float


@dataclass
class Claimed:
    """A step this worker now owns (until ``step.lease_until``, with ``step.lease_epoch``).

    From :func:`peek`, what a claim would give: the worker runs the step first and its
    outcome's transaction claims it (the fence is then :class:`Unclaimed`).
    """

    step: StepRecord
    execution: ExecutionRecord
    compiled: CompiledWorkflow
    referenced: dict[str, StepRecord]


@dataclass(frozen=True)
class Unclaimed:
    """The fence of a step its worker ran before claiming it (see :func:`peek`).

    The outcome's transaction claims the step first, which succeeds only if nobody claimed
    it meanwhile: the claim must give the step ``epoch``, the epoch the peek foresaw.
    """

    epoch: int
    #: When the worker started the step (the peek's time).
    started_at: float | None


#: What proves an outcome's worker owns the step: the lease epoch of its claim, or ``Unclaimed``.
Fence = int | Unclaimed


def step_context(compiled: CompiledWorkflow, key: str) -> set[str]:
    """The records recording an outcome of step ``key`` usually reads besides the step itself.

    A top-level step: its successors and what planning them reads. A foreach item: its parent
    and the items that tell whether one ends after it (:func:`progress.later_items`).
    """
    step_id, index = planner.parse_key(key)
    if step_id not in compiled.successors:
        return set()  # a key no step of the workflow has (e.g. a signal to a typo): nothing to add
    if index is not None:
        return {step_id, *progress.later_items(compiled, step_id, index)}
    return planning_keys(compiled, compiled.successors[step_id])


def open_step(tx: Transaction, workflows: Workflows, tenant: str, execution_id: str, key: str) -> Snapshot:
    """A snapshot for an outcome of ``key``: the header, the step and, when known, its context."""
    return open_snapshot(tx, workflows, tenant, execution_id, [key], prefetch=lambda c: step_context(c, key))


def _fenced(records: dict[str, StepRecord], key: str, epoch: int) -> StepRecord:
    step = records.get(key)
    if step is None or step.status is not StepStatus.RUNNING or step.lease_epoch != epoch:
        raise LeaseLost(f"step {key!r} is no longer leased with epoch {epoch}")
    return step


def owned(rec: Recorder, snap: Snapshot, key: str, fence: Fence, timing: Timing) -> StepRecord:
    """The RUNNING step an outcome is recorded on; an ``Unclaimed`` one is claimed here first.

    Raises ``LeaseLost`` (rolling the transaction back) if the worker does not own the step.
    """
    if not isinstance(fence, Unclaimed):
        return _fenced(snap.records, key, fence)
    step = _take(rec, snap, key, timing)
    if step is None or step.lease_epoch != fence.epoch:
        raise LeaseLost(f"step {key!r} was claimed by another worker while this one ran it")
    if fence.started_at is not None:
        step.started_at = fence.started_at
    return step


def _open_for_claim(reads: Reads, workflows: Workflows, tenant: str, execution_id: str, key: str) -> Snapshot | None:
    """The header, the step and (when the workflow is known) the steps its config reads."""
    step_id = planner.parse_key(key)[0]

    def referenced(compiled: CompiledWorkflow) -> Iterable[str]:
        return compiled.referenced_steps(step_id) if step_id in compiled.successors else ()

    try:
        return open_snapshot(reads, workflows, tenant, execution_id, [key], prefetch=referenced)
    except NotFound:
        return None


def claim(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    key: str,
    timing: Timing,
    sent_epoch: int | None = None,
    started_at: float | None = None,
) -> Claimed | None:
    """Take a QUEUED step (or a due retry); ``None`` when there is nothing to run.

    ``sent_epoch`` is the epoch the step message carries (:attr:`Dispatch.epoch`), if known.
    ``started_at``: the step already runs unclaimed since then (its keeper claims it late).
    """
    snap = _open_for_claim(rec.tx, workflows, tenant, execution_id, key)
    return None if snap is None else _claim_in(rec, snap, key, timing, sent_epoch, started_at)


def peek(
    reads: Reads, workflows: Workflows, tenant: str, execution_id: str, key: str, now: float, stale_before: float
) -> Claimed | None:
    """A step its worker may run before claiming it: the first attempt of a QUEUED step.

    Read outside any transaction (no locks, no write). The step comes back as the claim
    would leave it (attempt 1, the next epoch, started now) but nothing is written: the
    outcome's transaction claims it (:class:`Unclaimed`), or the worker does if the step
    runs long. ``None`` when the step must be claimed before it runs (a retry or a timer,
    whose claims count attempts) or is not to run at all; the worker then claims as usual.
    So is a step dispatched before ``stale_before``: the reconciler may send it again soon,
    and a claim keeps the two messages from running it twice.

    Claiming after the run saves a transaction per step. A step that kills its worker is
    still counted, after one uncounted run: the broker redelivers its message marked as
    such, or the reconciler sends it again with a new epoch, and either is claimed before
    it runs.
    """
    snap = _open_for_claim(reads, workflows, tenant, execution_id, key)
    if snap is None or snap.execution.status is not ExecutionStatus.RUNNING:
        return None
    step = snap.records.get(key)
    if step is None or step.status is not StepStatus.QUEUED or step.attempt or step.lease_epoch:
        return None  # claimed before, or sent again by the reconciler: claim it first
    if step.dispatched_at is not None and step.dispatched_at < stale_before:
        return None
    foreseen = replace(step, attempt=1, lease_epoch=step.lease_epoch + 1, started_at=now)
    return _with_context(snap, foreseen)


def _with_context(snap: Snapshot, step: StepRecord) -> Claimed:
    """``step`` with what running it needs: the execution, its workflow, the steps its config reads."""
    wanted = snap.compiled.referenced_steps(step.step_id)
    snap.ensure(wanted)
    referenced = {k: snap.records[k] for k in sorted(wanted) if k in snap.records}
    return Claimed(step, snap.execution, snap.compiled, referenced)


def _claim_in(
    rec: Recorder,
    snap: Snapshot,
    key: str,
    timing: Timing,
    sent_epoch: int | None = None,
    started_at: float | None = None,
) -> Claimed | None:
    step = _take(rec, snap, key, timing, sent_epoch, started_at)
    return None if step is None else _with_context(snap, step)


def _take(
    rec: Recorder,
    snap: Snapshot,
    key: str,
    timing: Timing,
    sent_epoch: int | None = None,
    started_at: float | None = None,
) -> StepRecord | None:
    """Claim ``key`` if it is ready to run (QUEUED, or a due retry); wake a due wait instead.

    A message that comes before its step's timer is due is an early timer message, sent
    again for the rest of the wait, unless it is stale: ``sent_epoch`` (the epoch it was sent
    with) below the step's means it was sent before the step's latest claim, so it is a
    second copy of a message that already ran (a failed attempt's, during its retry wait).
    The step's own timer message carries the current epoch; if that one is lost, the
    reconciler wakes the step once it is due. ``started_at``: the worker has been running the
    step unclaimed since then (its keeper claims it late); the attempt started then, not now.
    """
    step, execution, now = snap.records.get(key), snap.execution, rec.now
    if step is None or execution.status is not ExecutionStatus.RUNNING:
        return None
    if step.status in (StepStatus.RETRY_WAIT, StepStatus.WAITING) and step.wake_at is not None:
        if step.wake_at > now:
            if sent_epoch is None or sent_epoch >= step.lease_epoch:
                _early(rec, step, timing)
            return None
        if step.status is StepStatus.WAITING:
            wake(rec, snap, key)
            return None
        rec.move_step(step, StepStatus.QUEUED, Cause.TIMER, dispatch=False)
    if step.status is not StepStatus.QUEUED:
        return None
    step.attempt += 1
    step.lease_epoch += 1
    step.lease_until = now + timing.lease_seconds
    step.started_at = now if started_at is None else started_at
    step.error = None
    rec.move_step(step, StepStatus.RUNNING, Cause.CLAIM)
    return step


def _early(rec: Recorder, step: StepRecord, timing: Timing) -> None:
    """A timer's message came before its time (clock skew between hosts, a broker's coarse
    countdown): never start early; send it again for the rest of a short wait, and leave a
    long one to the reconciler, which wakes timers once they are due."""
    assert step.wake_at is not None
    remaining = step.wake_at - rec.now
    if remaining <= timing.short_timer:
        rec.effects.dispatches.append(
            Dispatch(
                step.tenant, step.execution_id, step.key, queue=step.queue, countdown=remaining, epoch=step.lease_epoch
            )
        )


def _claim_follower(rec: Recorder, snap: Snapshot, done: StepRecord, timing: Timing) -> Claimed | None:
    """When ``done`` ending made exactly one step ready, at once and on its queue, claim it here.

    The caller's worker runs it straight away: no claim transaction and no broker round trip
    of its own. Fencing is unchanged (the claim sets lease and epoch in this same commit); if
    the worker dies, the lease expires and the reconciler re-queues the step as usual.
    """
    dispatches = rec.effects.dispatches
    if len(dispatches) != 1:
        return None
    follower = dispatches[0]
    if follower.countdown or follower.queue != done.queue or follower.execution_id != done.execution_id:
        return None
    claimed = _claim_in(rec, snap, follower.step_key, timing)
    if claimed is not None:
        dispatches.clear()
    return claimed


def still_owned(step: StepRecord | None, fence: Fence) -> bool:
    """Whether an outcome recorded with ``fence`` could still be accepted for ``step`` (read unlocked).

    False once the step was cancelled or timed out with its execution, re-queued, or taken
    by another worker: its worker should stop running it (``ctx.cancelled()``).
    """
    if step is None:
        return False
    if isinstance(fence, Unclaimed):
        return step.status is StepStatus.QUEUED and step.lease_epoch == fence.epoch - 1
    return step.status is StepStatus.RUNNING and step.lease_epoch == fence


def heartbeat(rec: Recorder, tenant: str, execution_id: str, key: str, epoch: int, timing: Timing) -> None:
    """Extend the lease; ``LeaseLost`` tells the worker to stop."""
    step = _fenced(rec.tx.get_steps(tenant, execution_id, [key]), key, epoch)
    step.lease_until = rec.now + timing.lease_seconds
    rec.tx.put_step(step)


def complete(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    key: str,
    fence: Fence,
    output: Any,
    timing: Timing,
    *,
    follow: bool = False,
    event: dict[str, Any] | None = None,
) -> Claimed | None:
    """Record a step's success (fenced by ``fence``) and move the execution forward.

    With ``follow``, a single step this makes ready is claimed for the caller (see
    :func:`_claim_follower`) and returned. ``event`` is the data of its ``step.succeeded`` event.
    """
    snap = open_step(rec.tx, workflows, tenant, execution_id, key)
    step = owned(rec, snap, key, fence, timing)
    step.output = output
    _note_usage(rec, snap, key, (event or {}).get("usage"))
    complete_owned(rec, snap, step, event)
    return _claim_follower(rec, snap, step, timing) if follow else None


def complete_owned(rec: Recorder, snap: Snapshot, step: StepRecord, event: dict[str, Any] | None = None) -> None:
    """Record the success of a step this worker owns (its ``output`` set) and move the execution on."""
    rec.move_step(step, StepStatus.SUCCEEDED, Cause.COMPLETE, event)
    _after(rec, snap, step)


@dataclass(frozen=True)
class EventWait:
    """What a step waits for: external events of ``type`` with ``correlation_key`` (see eventlog)."""

    type: str
    correlation_key: str
    route: str


def park(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    key: str,
    fence: Fence,
    *,
    until: float | None,
    on_wake: str,
    match: str | None,
    timing: Timing,
    event: EventWait | None = None,
    interrupt: dict[str, Any] | None = None,
    kind: str = "timer",
    details: dict[str, Any] | None = None,
) -> None:
    """Put a running step into WAITING until a timer fires, a signal or an awaited event arrives.

    A step waiting for an event registers its waiter in this same transaction; the event log
    is then scanned after commit (``Effects.waiters``). Until that scan is done the step's
    timer is the scan's deadline, so a worker lost before scanning leaves it to the reconciler.
    A signal kept for the step (it arrived before the step waited) is delivered here.

    With ``interrupt`` (an agent waiting for a person) a signal resumes the step instead of
    completing it: the interrupt's request is recorded in the event for whoever answers.
    ``kind`` and ``details`` (e.g. an approval's roles and declared timeout outcome) are kept
    in ``wait`` for whoever resumes the step.
    """
    snap = open_step(rec.tx, workflows, tenant, execution_id, key)
    step = owned(rec, snap, key, fence, timing)
    kept = rec.tx.get_signal(tenant, execution_id, key)
    step.wake_at = until
    if event is not None and kind == "timer":
        kind = "event"
    step.wait = {**(details or {}), "on_wake": on_wake, "match": match, "kind": kind}
    data: dict[str, Any] = {"until": until}
    if interrupt is not None:
        step.wait["interrupt"] = interrupt
        data["interrupt"] = interrupt
        _note_usage(rec, snap, key, interrupt.get("usage"))
    step.lease_until = None
    if event is not None:
        since = snap.execution.created_at
        step.wait |= {
            "event": event.type,
            "correlation_key": event.correlation_key,
            "route": event.route,
            "since": since,
            "timeout_at": until,
            "scan_pending": True,
        }
        step.wake_at = rec.now + timing.lease_seconds
        rec.watch(WaiterRecord(tenant, execution_id, key, event.route, since))
    refused = None if kept is None else _kept_signal_refused(step, kept)
    if refused is not None:
        rec.tx.delete_signal(tenant, execution_id, key)
        data["kept_signal_refused"] = refused
        kept = None
    if kept is not None and snap.execution.status is not ExecutionStatus.RUNNING:
        # Paused while the step ran: the signal stays kept until the execution resumes.
        step.wait["signal_kept"] = True
        kept = None
    rec.move_step(step, StepStatus.WAITING, Cause.COMPLETE, data)
    if kept is not None and _take_kept_signal(rec, snap, step, kept):
        return
    if step.wake_at is not None and step.wake_at - rec.now <= timing.short_timer:
        rec.queue_dispatch(step, countdown=max(0.0, step.wake_at - rec.now))


def _kept_signal_refused(step: StepRecord, kept: SignalRecord) -> dict[str, Any] | None:
    """Why the interrupt ``step`` waits on refuses the answer kept for it, or None if it takes it.

    An agent's interrupt and its schema exist only once the agent asks, so an answer sent
    before is kept unchecked (its ``match`` was checked then, see :func:`_may_match`). The
    refusal goes into the history event of the wait (the sender was told the answer was kept:
    it must not vanish without a trace), and the step waits for an answer that fits.
    """
    interrupt = (step.wait or {}).get("interrupt")
    if interrupt is None:
        return None
    try:
        _check_answer(interrupt, kept.payload)
    except InputInvalid as exc:
        problems = [{"path": problem.path, "message": problem.message} for problem in exc.problems]
        return {"signal_at": kept.at, "reason": exc.message, "problems": problems}
    return None


def deliver_kept_signal(rec: Recorder, snap: Snapshot, step: StepRecord) -> None:
    """Deliver the signal kept for ``step``, which began waiting while its execution was paused.

    Called when the execution resumes, for a step whose ``wait`` says a signal is kept.
    """
    step.wait = {name: value for name, value in (step.wait or {}).items() if name != "signal_kept"}
    kept = rec.tx.get_signal(step.tenant, step.execution_id, step.key)
    if kept is None or not _take_kept_signal(rec, snap, step, kept):
        rec.tx.put_step(step)


def _take_kept_signal(rec: Recorder, snap: Snapshot, step: StepRecord, kept: SignalRecord) -> bool:
    """Deliver the signal kept for a step that now waits (one it refuses was taken out before)."""
    rec.tx.delete_signal(step.tenant, step.execution_id, step.key)
    return resume(rec, snap, step, Delivery("signal", f"signal:{kept.at!r}", kept.payload))


@dataclass(frozen=True)
class Delivery:
    """Something that may end a WAITING step: a signal's payload or an external event.

    ``payload`` becomes the step's output. An event delivery names its ``route`` and
    acceptance time, which must be those the step waits for. With ``error`` the step fails
    instead (keeping the payload as its output, e.g. a rejection's decision); ``record`` is
    added to the history event (e.g. who decided).
    """

    kind: str
    id: str
    payload: Any
    event: dict[str, Any] | None = None
    route: str | None = None
    accepted_at: float | None = None
    error: dict[str, Any] | None = None
    record: dict[str, Any] | None = None


def resume(rec: Recorder, snap: Snapshot, step: StepRecord, delivery: Delivery) -> bool:
    """The one guarded transition that ends a WAITING step with something delivered to it.

    Signals, external events (from the router or the waiter's own scan) and decisions all
    come through here, inside the transaction that reads the step: only a step still WAITING
    in a running execution, waiting for this route since before the event, whose ``match``
    the delivery satisfies, moves on, and the delivery's id is recorded with it: it succeeds
    with the payload as its output, or, waiting on an interrupt (an agent asking a person),
    goes back to the queue with the payload as its answer. A second delivery finds the step
    no longer WAITING, so a step is never resumed twice.
    """
    wait = step.wait or {}
    status = snap.execution.status
    # A child may settle while its parent is paused: its result is recorded like a step that
    # finishes during a pause (its successors wait in QUEUED until the parent resumes).
    live = status is ExecutionStatus.RUNNING or (delivery.kind == "child" and status is ExecutionStatus.PAUSED)
    if step.status is not StepStatus.WAITING or not live:
        return False
    if delivery.kind == "event" and not _awaits(wait, delivery):
        return False
    if not _satisfies(wait, delivery, snap.execution):
        return False
    delivered = {"kind": delivery.kind, "id": delivery.id}
    interrupt = wait.get("interrupt")
    if interrupt is not None:
        # An agent asked a person: the answer goes back to the step's next attempt (ctx.resume).
        _check_answer(interrupt, delivery.payload)
        answer = {"interrupt_id": interrupt.get("id"), "value": delivery.payload}
        step.wait = {**wait, "answer": answer, "delivered": delivered}
        step.wake_at = None
        rec.move_step(step, StepStatus.QUEUED, Cause.SIGNAL)
        return True
    step.output = delivery.payload
    step.wait = {**wait, "scan_pending": False, "delivered": delivered}
    if wait.get("route"):
        rec.tx.delete_waiter(step.tenant, step.execution_id, step.key)
    data = {"delivered": delivery.kind, "id": delivery.id, **(delivery.record or {})}
    if delivery.error is None:
        rec.move_step(step, StepStatus.SUCCEEDED, Cause.SIGNAL, data)
    else:
        step.error = delivery.error
        rec.move_step(step, StepStatus.FAILED, Cause.SIGNAL, {**data, "error": delivery.error})
    _after(rec, snap, step)
    return True


def waiting_step(snap: Snapshot, key: str, what: str) -> StepRecord:
    """The WAITING step ``key`` of a running execution; ``NotFound`` or ``TransitionRefused`` otherwise."""
    step = snap.records.get(key)
    if step is None:
        raise NotFound(f"step {key!r} not found in execution {snap.execution.id!r}")
    if step.status is not StepStatus.WAITING or snap.execution.status is not ExecutionStatus.RUNNING:
        status = f"{step.status} in a {snap.execution.status} execution"
        raise TransitionRefused(f"step {key!r} is {status}, not WAITING; it cannot take {what}")
    return step


def _awaits(wait: dict[str, Any], delivery: Delivery) -> bool:
    """Whether the step waits on the event's route, and waited since before it was accepted."""
    since = float(wait.get("since") or 0.0)
    return wait.get("route") == delivery.route and (delivery.accepted_at or 0.0) >= since


def _satisfies(wait: dict[str, Any], delivery: Delivery, execution: ExecutionRecord) -> bool:
    """Whether the wait's CEL ``match`` holds for the delivery (no match: anything does).

    An expression that fails to evaluate, or gives anything but ``true``, does not match.
    """
    source = wait.get("match")
    if not source:
        return True
    event = delivery.event or {"id": delivery.id, "type": wait.get("event"), "data": delivery.payload}
    variables = {
        "event": event,
        "signal": delivery.payload,
        "input": execution.input,
        "execution": {"id": execution.id, "workflow": execution.workflow, "version": execution.version},
    }
    try:
        return compile_expression(str(source)).evaluate(variables) is True
    except ExpressionError:
        return False


def deliver_event(rec: Recorder, workflows: Workflows, waiter: WaiterRecord, delivery: Delivery) -> bool:
    """Offer an event to a registered waiter; a waiter whose step no longer waits is removed."""
    try:
        snap = open_step(rec.tx, workflows, waiter.tenant, waiter.execution_id, waiter.step_key)
    except NotFound:
        rec.tx.delete_waiter(waiter.tenant, waiter.execution_id, waiter.step_key)
        return False
    step = snap.records.get(waiter.step_key)
    if step is None or step.status in STEP_TERMINAL:
        rec.tx.delete_waiter(waiter.tenant, waiter.execution_id, waiter.step_key)
        return False
    return resume(rec, snap, step, delivery)


def finish_scan(rec: Recorder, tenant: str, execution_id: str, key: str, timing: Timing) -> None:
    """The event log was scanned for a new waiter: from now on only its timeout is its timer."""
    step = rec.tx.get_steps(tenant, execution_id, [key]).get(key)
    if step is None or step.status is not StepStatus.WAITING or not (step.wait or {}).get("scan_pending"):
        return
    wait = step.wait or {}
    step.wait = {**wait, "scan_pending": False}
    timeout_at = wait.get("timeout_at")
    step.wake_at = None if timeout_at is None else float(timeout_at)
    rec.tx.put_step(step)
    if step.wake_at is not None and step.wake_at - rec.now <= timing.short_timer:
        rec.queue_dispatch(step, countdown=max(0.0, step.wake_at - rec.now))


def wait_step(rec: Recorder, step: StepRecord, wait: dict[str, Any]) -> None:
    """Move a step this worker owns into WAITING, without a timer, until ``wait`` is resolved.

    For waits that a use case of their own ends (a subworkflow's child); a plain signal
    cannot end them (see :func:`signal`).
    """
    step.wake_at = None
    step.wait = wait
    step.lease_until = None
    rec.move_step(step, StepStatus.WAITING, Cause.COMPLETE, {"until": None, "kind": wait.get("kind")})


def _note_usage(rec: Recorder, snap: Snapshot, key: str, usage: dict[str, Any] | None) -> None:
    """Record an AI step's model usage (over all its attempts) on the execution header, for
    ``execution.usage`` and the execution's budget. Only AI outcomes carry usage."""
    if not usage:
        return
    execution = snap.execution
    execution.usage = {**(execution.usage or {}), key: usage}
    rec.tx.put_execution(execution)


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """Delay before attempt ``attempt + 1``: fixed or exponential, capped, with equal jitter."""
    delay = policy.initial if policy.backoff == "fixed" else policy.initial * 2 ** (attempt - 1)
    delay = min(delay, policy.max)
    return delay / 2 + random.uniform(0, delay / 2) if policy.jitter else delay  # noqa: S311


def fail(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    key: str,
    fence: Fence,
    error: dict[str, Any],
    retryable: bool,
    timing: Timing,
) -> None:
    """Record a failed attempt: wait and retry per the step's policy, or fail the step."""
    snap = open_step(rec.tx, workflows, tenant, execution_id, key)
    step = owned(rec, snap, key, fence, timing)
    policy = snap.compiled.step(step.step_id).retry
    step.error = error
    _note_usage(rec, snap, key, error.get("usage"))
    if retryable and error.get("type") not in policy.non_retryable and step.attempt < policy.max_attempts:
        delay = backoff_delay(policy, step.attempt)
        step.wake_at = rec.now + delay
        rec.move_step(step, StepStatus.RETRY_WAIT, Cause.COMPLETE, {"error": error, "delay": round(delay, 3)})
        if delay <= timing.short_timer:
            rec.queue_dispatch(step, countdown=delay)
        return
    fail_owned(rec, snap, step, error)


def fail_owned(rec: Recorder, snap: Snapshot, step: StepRecord, error: dict[str, Any]) -> None:
    """Fail a step this worker owns for good (no retry) and move the execution on."""
    step.error = error
    rec.move_step(step, StepStatus.FAILED, Cause.COMPLETE, {"error": error})
    _after(rec, snap, step)


def _after(rec: Recorder, snap: Snapshot, step: StepRecord) -> None:
    if planner.is_item(step):
        progress.item_ended(rec, snap, step)
    else:
        progress.advance(rec, snap, ended=step.key)


def wake(rec: Recorder, snap: Snapshot, key: str) -> None:
    """A due timer: a retry goes back to the queue; a wait succeeds (or fails on a timeout)."""
    step = snap.records.get(key)
    if step is None or step.wake_at is None or step.wake_at > rec.now:
        return
    if step.status is StepStatus.RETRY_WAIT:
        rec.move_step(step, StepStatus.QUEUED, Cause.TIMER)
        return
    if step.status is not StepStatus.WAITING or snap.execution.status is not ExecutionStatus.RUNNING:
        return
    wait = step.wait or {}
    if wait.get("scan_pending"):
        return  # its event-log scan is due first (the reconciler runs it), not its timeout
    if wait.get("route"):
        rec.tx.delete_waiter(step.tenant, step.execution_id, step.key)
    if wait.get("on_wake") == "fail":
        declared = wait.get("timeout_error") or {}
        message, error_type = declared.get("message", "timed out waiting"), declared.get("type", "WaitTimeout")
        step.error = progress.error_info(message, error_type)
        rec.move_step(step, StepStatus.FAILED, Cause.TIMER, {"error": step.error})
    else:
        step.output = wait.get("timeout_output")
        rec.move_step(step, StepStatus.SUCCEEDED, Cause.TIMER)
    _after(rec, snap, step)


def wake_timer(rec: Recorder, workflows: Workflows, tenant: str, execution_id: str, key: str) -> None:
    """The reconciler found the timer of ``key`` due (it waits while the execution is paused)."""
    snap = open_step(rec.tx, workflows, tenant, execution_id, key)
    if snap.execution.status is ExecutionStatus.RUNNING:
        wake(rec, snap, key)


#: Step types a plain signal may not end: their own use case resumes them, checking what they
#: require (an approval's roles, a child execution's result).
SIGNAL_REFUSED = {"approval": "decide it through its approval endpoint", "subworkflow": "it ends with its child"}


def signal(rec: Recorder, workflows: Workflows, tenant: str, execution_id: str, key: str, payload: Any) -> StepRecord:
    """Deliver a payload to a step: a WAITING step succeeds with it as its output.

    A signal for a step that has not reached WAITING yet (not created, queued, running,
    retrying) is kept in the store and delivered when the step waits (:func:`park`); one
    signal is kept per step. The returned record is the step as it is now; a kept signal
    shows as ``wait.signal_kept``.

    A step waiting on an interrupt (an agent asking a person) goes back to the queue instead,
    its next attempt getting the payload as ``ctx.resume``; the payload must match the
    interrupt's schema.
    """
    snap = open_step(rec.tx, workflows, tenant, execution_id, key)
    step_id = planner.parse_key(key)[0]
    if step_id not in snap.compiled.successors:
        raise NotFound(f"step {key!r} not found in execution {execution_id!r}")
    step_type = snap.compiled.step(step_id).type
    if step_type in SIGNAL_REFUSED:
        reason = SIGNAL_REFUSED[step_type]
        raise TransitionRefused(f"step {key!r} is an {step_type} step; a signal cannot end it ({reason})")
    step = snap.records.get(key)
    if snap.execution.status is not ExecutionStatus.RUNNING:
        raise TransitionRefused(f"execution {execution_id!r} is {snap.execution.status}; it cannot take a signal")
    if step is not None and step.status is StepStatus.WAITING:
        if not resume(rec, snap, step, Delivery("signal", f"signal:{rec.now!r}", payload)):
            raise TransitionRefused(f"the signal does not satisfy the match of step {key!r}")
        return step
    if step is not None and step.status in STEP_TERMINAL:
        raise TransitionRefused(f"step {key!r} is {step.status}; it cannot take a signal")
    kind = steptypes.get(step_type)
    if kind is None or not kind.may_wait:
        raise TransitionRefused(f"step {key!r} is a {step_type} step, which never waits; it cannot take a signal")
    if rec.tx.get_signal(tenant, execution_id, key) is not None:
        raise TransitionRefused(f"a signal is already kept for step {key!r} until it waits")
    if not _may_match(snap, step_id, Delivery("signal", f"signal:{rec.now!r}", payload)):
        raise TransitionRefused(f"the signal does not satisfy the match of step {key!r}")
    rec.tx.put_signal(SignalRecord(tenant, execution_id, key, payload, rec.now))
    shown = step or StepRecord(execution_id, tenant, key, step_id, StepStatus.QUEUED)
    return replace(shown, wait={**(shown.wait or {}), "signal_kept": True})


def _may_match(snap: Snapshot, step_id: str, delivery: Delivery) -> bool:
    """Whether a signal kept for a step not waiting yet can satisfy its ``match`` once it waits.

    The match reads only the signal, the input and the execution's identity, all known now,
    so a signal it refuses is refused at once (as for a waiting step) instead of being kept
    and dropped when the step waits. A match given as a template is only known then.
    """
    config = snap.compiled.step(step_id).config
    match = config.get("match")
    if not isinstance(match, str) or "${" in match:
        return True
    return _satisfies({"match": match, "event": config.get("type")}, delivery, snap.execution)


def _check_answer(interrupt: dict[str, Any], payload: Any) -> None:
    """Refuse an answer that does not match the interrupt's JSON Schema (``InputInvalid``)."""
    schema = interrupt.get("schema")
    if not schema:
        return
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        problems = [Problem("/".join(map(str, e.absolute_path)) or "payload", e.message) for e in errors]
        raise InputInvalid("the signal does not answer the step's interrupt", problems)


def expire_lease(rec: Recorder, workflows: Workflows, tenant: str, execution_id: str, key: str) -> None:
    """The worker holding the step vanished: re-queue it, or fail it once allowances are spent.

    A running foreach parent has no worker: its lease is when its fan-in is checked, in case
    the worker that should have finished it died right after its item's commit.
    """
    snap = open_step(rec.tx, workflows, tenant, execution_id, key)
    step = snap.records.get(key)
    if step is None or step.status is not StepStatus.RUNNING or step.lease_until is None:
        return
    if step.lease_until > rec.now:
        return
    if planner.is_foreach_parent(step):
        if not progress.finish_foreach(rec, snap, step):
            step.lease_until = rec.now + rec.fanin_check_seconds
            rec.tx.put_step(step)
        return
    step.lease_epoch += 1
    if step.attempt < snap.compiled.step(step.step_id).retry.max_attempts + LOST_WORKER_ALLOWANCE:
        rec.move_step(step, StepStatus.QUEUED, Cause.LEASE_EXPIRED, {"reason": "lease expired"})
        return
    step.error = progress.error_info("the worker running this step was lost", "WorkerLost")
    rec.move_step(step, StepStatus.FAILED, Cause.LEASE_EXPIRED, {"error": step.error})
    _after(rec, snap, step)


def check_fanin(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    step_id: str,
    follow: Timing | None = None,
) -> Claimed | None:
    """Finish the foreach ``step_id`` if every item has ended (after an item's commit saw none active).

    With ``follow``, a single step this makes ready is claimed for the caller, as in :func:`complete`.
    """
    snap = load_whole(rec.tx, workflows, tenant, execution_id)
    parent = snap.records.get(step_id)
    if parent is None or not planner.is_foreach_parent(parent) or not progress.finish_foreach(rec, snap, parent):
        return None
    return None if follow is None else _claim_follower(rec, snap, parent, follow)


def redispatch(rec: Recorder, tenant: str, execution_id: str, key: str, stale_before: float) -> bool:
    """Send a QUEUED step again whose message may have been lost (transactional outbox).

    The message may also have been held by a worker that died running the step unclaimed
    (see :func:`peek`). The new epoch makes the step be claimed before it runs again, so a
    step that kills its workers has its attempts counted, and it fences out any run of the
    old message that is still going. Whether it sent the step again.
    """
    step = rec.tx.get_steps(tenant, execution_id, [key]).get(key)
    if step is None or step.status is not StepStatus.QUEUED:
        return False  # claimed meanwhile (its message had just reached a worker)
    if step.dispatched_at is not None and step.dispatched_at > stale_before:
        return False
    step.lease_epoch += 1
    rec.queue_dispatch(step, urgent=True)
    rec.tx.put_step(step)
    return True
