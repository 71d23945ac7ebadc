"""Apply transitions inside a transaction, one event each, and collect the effects.

Every creation and status change in the engine goes through :class:`Recorder`, which asks
:func:`engine.states.require` first. That is what makes "every transition is recorded
exactly once" hold: the record, its event and the effects commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.events import execution_event, step_event
from engine.orchestration import planner
from engine.ports import Dispatch, Transaction
from engine.records import EventRecord, ExecutionRecord, StepRecord, WaiterRecord
from engine.states import EXECUTION_TERMINAL, NEW, Cause, ExecutionStatus, Machine, StepStatus, require


def machine_of(step: StepRecord) -> Machine:
    """A foreach parent (an expanded top-level record, see ``is_foreach_parent``) follows its own machine."""
    return Machine.FOREACH if planner.is_foreach_parent(step) else Machine.STEP


@dataclass(frozen=True)
class FaninCheck:
    """A foreach item that may have been the last to end: after commit, count the active items.

    ``last_items`` are the keys of the foreach's last ``concurrency`` items, one per chain of
    items (item *i* creates item *i + concurrency* when it ends, so a chain has ended once its
    last item has), or none when the list is no longer than that. While one of them is active
    or not created yet, an item will end later and ask again, so the check stops there: a
    read by key, where the count is a query over every item. The last two items may both
    ask; a marker per foreach and run elects one of them to finish the parent, as two
    finishing transactions would contend for it.
    """

    tenant: str
    execution_id: str
    step_id: str
    run: int
    last_items: tuple[str, ...] = ()

    @property
    def marker(self) -> str:
        return f"fanin:{self.step_id}:{self.run}"


@dataclass
class Effects:
    """What the caller performs after commit: step dispatches, live events, fan-in checks,
    and event-log scans for steps that just started waiting for an event."""

    events: list[EventRecord] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    fanin_checks: list[FaninCheck] = field(default_factory=list)
    waiters: list[WaiterRecord] = field(default_factory=list)
    #: Executions this transaction created, and those it moved to a final status (for metrics).
    started: list[ExecutionRecord] = field(default_factory=list)
    settled: list[ExecutionRecord] = field(default_factory=list)


#: Called in the transaction that moves an execution a schedule trigger started.
ScheduleHook = Callable[["Recorder", ExecutionRecord], None]
#: How long an execution that just ended is kept, in seconds (``None``: forever); see
#: :class:`engine.retention.RetentionPolicy`.
RetentionOf = Callable[[ExecutionRecord], float | None]


class ExecutionLinks(Protocol):
    """What ties a child execution to the parent step that waits for it (``children.Links``).

    Called inside the transaction that ends one side, so the other side hears of it in the
    same commit: nothing is lost between them.
    """

    def child_settled(self, rec: Recorder, child: ExecutionRecord) -> None:
        """``child`` (which has a parent) just reached a terminal status: resume its parent step."""
        ...

    def cancel_child(self, rec: Recorder, step: StepRecord, reason: str) -> None:
        """The parent step ``step`` that waits for a child was just cancelled: cancel the child."""
        ...


class Recorder:
    """Writes records and their events into ``tx`` and gathers :class:`Effects`."""

    def __init__(
        self,
        tx: Transaction,
        now: float,
        *,
        max_foreach_items: int = 10_000,
        fanin_check_seconds: float = 30.0,
        schedule_hook: ScheduleHook | None = None,
        links: ExecutionLinks | None = None,
        retention: RetentionOf | None = None,
    ) -> None:
        self.tx = tx
        #: Sets ``expires_at`` of an execution that ends; without it, executions are kept forever.
        self.retention = retention
        self.now = now
        self.links = links
        self.max_foreach_items = max_foreach_items
        #: How long after it starts (or was last checked) the reconciler checks a foreach's fan-in.
        self.fanin_check_seconds = fanin_check_seconds
        #: Keeps a schedule trigger's running executions and buffered fires in step
        #: (:meth:`engine.orchestration.schedule_runs.ScheduleRuns.execution_moved`).
        self.schedule_hook = schedule_hook
        #: Executions each tenant may still start in this transaction, for trigger starts that
        #: count toward the tenant's quota (set by the use case; a tenant not listed is unchecked).
        self.start_budget: dict[str, int] = {}
        self.effects = Effects()

    def _emit(self, event: EventRecord) -> None:
        self.tx.add_event(event)
        self.effects.events.append(event)

    def create_execution(self, execution: ExecutionRecord, data: dict[str, Any] | None = None) -> None:
        require(NEW, execution.status, Cause.START, Machine.EXECUTION)
        self.tx.put_execution(execution)
        self._emit(execution_event(execution, self.now, data))
        self.effects.started.append(execution)

    def move_execution(
        self, execution: ExecutionRecord, target: ExecutionStatus, cause: Cause, data: dict[str, Any] | None = None
    ) -> None:
        require(execution.status, target, cause)
        execution.status = target
        execution.updated_at = self.now
        execution.finished_at = self.now if target not in (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED) else None
        kept = self.retention(execution) if target in EXECUTION_TERMINAL and self.retention is not None else None
        execution.expires_at = None if kept is None else self.now + kept
        self.tx.put_execution(execution)
        self._emit(execution_event(execution, self.now, data))
        if target in EXECUTION_TERMINAL:
            self.effects.settled.append(execution)
        if execution.trigger_id is not None and self.schedule_hook is not None:
            self.schedule_hook(self, execution)
        if target in EXECUTION_TERMINAL and execution.parent and self.links is not None:
            self.links.child_settled(self, execution)

    def create_step(self, step: StepRecord, data: dict[str, Any] | None = None) -> None:
        """Create a planned step in its first status (a creation edge of its machine)."""
        require(NEW, step.status, Cause.PLAN, machine_of(step))
        step.created_at = self.now
        if step.status is StepStatus.QUEUED:
            self.queue_dispatch(step)
        self.tx.put_step(step)
        self._emit(step_event(step, self.now, data))

    def move_step(
        self,
        step: StepRecord,
        target: StepStatus,
        cause: Cause,
        data: dict[str, Any] | None = None,
        *,
        dispatch: bool = True,
    ) -> None:
        """Move ``step`` to ``target``; a step entering QUEUED is dispatched unless told otherwise.

        A step re-queued because its worker vanished is dispatched as urgent (recovery).
        """
        require(step.status, target, cause, machine_of(step))
        step.status = target
        if target is StepStatus.QUEUED and dispatch:
            self.queue_dispatch(step, urgent=cause is Cause.LEASE_EXPIRED)
        if target in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED):
            step.finished_at = self.now
            step.lease_until = None
            step.wake_at = None
        self.tx.put_step(step)
        self._emit(step_event(step, self.now, data))

    def withdraw_step(self, step: StepRecord, cause: Cause) -> None:
        """Give up a step's record so that planning creates it afresh (``FAILED -> NEW``).

        The record stays in the store until the new plan overwrites it, in this transaction.
        """
        require(step.status, NEW, cause, machine_of(step))

    def check_fanin(self, parent: StepRecord, last_items: tuple[str, ...]) -> None:
        """Ask for a check after commit whether every item of the foreach ``parent`` has ended."""
        check = FaninCheck(parent.tenant, parent.execution_id, parent.step_id, parent.run, last_items)
        if check not in self.effects.fanin_checks:
            self.effects.fanin_checks.append(check)

    def watch(self, waiter: WaiterRecord) -> None:
        """Register a waiting step on its route and scan the event log for it after commit.

        The waiter commits with the step's move to WAITING; the scan after that commit finds
        every event accepted before it, and the router finds the waiter for every event
        accepted after it: no event falls between the two.
        """
        self.tx.put_waiter(waiter)
        self.effects.waiters.append(waiter)

    def queue_dispatch(self, step: StepRecord, countdown: float = 0.0, *, urgent: bool = False) -> None:
        """Send the step after commit; ``dispatched_at`` lets the reconciler resend a lost message."""
        step.dispatched_at = self.now + countdown
        self.effects.dispatches.append(
            Dispatch(
                step.tenant,
                step.execution_id,
                step.key,
                queue=step.queue,
                countdown=countdown,
                urgent=urgent,
                epoch=step.lease_epoch,
            )
        )
