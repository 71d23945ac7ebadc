"""Executions started by schedule triggers, inside store transactions.

:meth:`ScheduleRuns.fire` is one pass over one due trigger: re-read it, plan the fires owed
(:func:`engine.schedules.plan_fires`), start each with the key ``trigger_id:<fire time>``
and advance ``next_fire_at``, all in the caller's transaction. Two beats that fire the same
trigger at once are serialized by the store: the second re-reads ``next_fire_at`` already
advanced and owes nothing, and even a start it repeated would find its key taken.

:meth:`ScheduleRuns.execution_moved` is the hook :class:`~engine.orchestration.recorder.Recorder`
calls when an execution a schedule started changes status: when it ends, it leaves the
trigger's ``running`` list and the oldest buffered fire starts, in that same transaction,
within the tenant's quota of active executions like every trigger start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import ValidationError

from engine.errors import ConveyorError, NotFound, QuotaExceeded, TransitionRefused
from engine.orchestration import control
from engine.orchestration.recorder import Recorder
from engine.orchestration.workflows import Workflows
from engine.records import ExecutionRecord, TriggerRecord
from engine.schedules import (
    FirePlan,
    Overlap,
    ScheduleSpec,
    TriggerState,
    fire_key,
    plan_fires,
    release_buffered,
    track_running,
)
from engine.states import EXECUTION_ACTIVE, EXECUTION_TERMINAL

log = structlog.get_logger("conveyor.schedules")

#: Starts an execution inside ``rec``'s transaction (the engine's start use case):
#: ``(rec, tenant, workflow, input, idempotency_key, trigger_id) -> execution``.
StartInTransaction = Callable[[Recorder, str, str, Any, str, str], ExecutionRecord]
#: How many more executions a tenant may start now (its quota less its active executions).
StartBudget = Callable[[str], int]


@dataclass
class FireReport:
    """What firing one trigger did."""

    trigger_id: str
    plan: FirePlan | None = None
    started: list[str] = field(default_factory=list)


class ScheduleRuns:
    """Fires schedule triggers and releases their buffered fires."""

    def __init__(self, start: StartInTransaction, workflows: Workflows, budget: StartBudget) -> None:
        self._start = start
        self._workflows = workflows
        self._budget = budget

    def fire(self, rec: Recorder, tenant: str, trigger_id: str) -> FireReport:
        """Fire what ``trigger_id`` owes at ``rec.now``; nothing if it is not due (any more)."""
        report = FireReport(trigger_id)
        trigger = rec.tx.get_trigger(tenant, trigger_id)
        if trigger is None or trigger.kind != "schedule" or not trigger.enabled or trigger.next_fire_at is None:
            return report
        try:
            spec = ScheduleSpec.model_validate(trigger.spec)
        except ValidationError as exc:
            # Stored before a stricter check (e.g. a 6-field cron): stop scheduling it, say why.
            trigger.next_fire_at = None
            trigger.last_error = f"the schedule spec is not valid: {exc.errors()[0]['msg']}; update it to resume"
            rec.tx.put_trigger(trigger)
            return report
        if spec.overlap is not Overlap.ALLOW_ALL:
            trigger.running = self._still_active(rec, tenant, trigger.running)
        state = TriggerState(trigger.next_fire_at, len(trigger.running), list(trigger.pending))
        plan = plan_fires(spec, spec.schedule(trigger.created_at), state, rec.now)
        if plan is None:
            return report
        report.plan = plan
        if plan.cancel_running:
            for execution_id in list(trigger.running):
                self._cancel(rec, tenant, execution_id)
            trigger = self._reread(rec, trigger)
            trigger.running = []  # cancelled now, or ended (or gone) before
        trigger.next_fire_at = plan.next_fire_at
        trigger.pending = plan.pending
        trigger.missed += plan.missed
        trigger.skipped += plan.skipped
        trigger.buffered += plan.buffered
        rec.tx.put_trigger(trigger)
        for moment in plan.start:
            started = self._start_fire(rec, trigger, moment)
            if started is not None:
                report.started.append(started.id)
        return report

    def execution_moved(self, rec: Recorder, execution: ExecutionRecord) -> None:
        """Keep the trigger's ``running`` list in step with ``execution``; release a buffered fire."""
        assert execution.trigger_id is not None
        trigger = rec.tx.get_trigger(execution.tenant, execution.trigger_id)
        if trigger is None:
            return
        if execution.status in EXECUTION_ACTIVE and execution.id not in trigger.running:
            trigger.running = track_running(trigger.running, execution.id)  # a retried execution runs again
            rec.tx.put_trigger(trigger)
        elif execution.status in EXECUTION_TERMINAL and execution.id in trigger.running:
            trigger.running.remove(execution.id)
            rec.tx.put_trigger(trigger)
            self._release(rec, trigger)

    @staticmethod
    def _still_active(rec: Recorder, tenant: str, running: list[str]) -> list[str]:
        """The ids of ``running`` whose execution is still active.

        Normally all of them (an execution leaves the list when it ends); this keeps one lost
        from the list by any other path from blocking a ``skip`` schedule for ever.
        """
        return [
            execution_id
            for execution_id in running
            if (found := rec.tx.get_execution(tenant, execution_id)) is not None and found.status in EXECUTION_ACTIVE
        ]

    def _release(self, rec: Recorder, trigger: TriggerRecord) -> None:
        """Start buffered fires while none of the trigger's executions runs.

        Each start is held to the tenant's quota, as a fire is: one over it is skipped and
        counted on the trigger. Unless the use case set a budget already, it is counted here;
        the execution whose end releases the fire is still active in that count (its end is
        not committed yet), and the released fire takes its place.
        """
        if trigger.enabled and not trigger.running and trigger.pending and trigger.tenant not in rec.start_budget:
            rec.start_budget[trigger.tenant] = self._budget(trigger.tenant) + 1
        while trigger.enabled and not trigger.running and trigger.pending:
            moment, trigger.pending = release_buffered(trigger.pending)
            assert moment is not None
            rec.tx.put_trigger(trigger)
            self._start_fire(rec, trigger, moment)
            trigger = self._reread(rec, trigger)

    def _start_fire(self, rec: Recorder, trigger: TriggerRecord, moment: float) -> ExecutionRecord | None:
        """Start the execution of one fire time and count it; a start the engine refuses is logged."""
        key = fire_key(trigger.id, moment)
        try:
            execution = self._start(rec, trigger.tenant, trigger.workflow, trigger.input, key, trigger.id)
        except QuotaExceeded as exc:
            # Over the tenant's quota of active executions: the fire is skipped, and counted.
            log.warning("schedule fire over the tenant's quota; skipped", trigger_id=trigger.id, key=key)
            current = self._reread(rec, trigger)
            current.skipped += 1
            current.last_error = f"{key}: skipped: {exc}"
            rec.tx.put_trigger(current)
            return None
        except ConveyorError as exc:
            # Refused before anything was written (unknown or archived workflow, input that
            # does not fit its schema): the fire is spent, the reason kept on the trigger.
            log.warning("schedule fire refused", trigger_id=trigger.id, key=key, error=str(exc))
            current = self._reread(rec, trigger)
            current.last_error = f"{key}: {exc}"
            rec.tx.put_trigger(current)
            return None
        current = self._reread(rec, trigger)
        current.fired += 1
        current.last_fire_at = moment
        current.last_error = None
        if execution.status in EXECUTION_ACTIVE:
            current.running = track_running(current.running, execution.id)
        rec.tx.put_trigger(current)
        return execution

    def _cancel(self, rec: Recorder, tenant: str, execution_id: str) -> None:
        with contextlib.suppress(TransitionRefused, NotFound):  # already ended, or gone
            control.cancel(rec, self._workflows, tenant, execution_id, "cancelled by a newer fire of its schedule")

    @staticmethod
    def _reread(rec: Recorder, trigger: TriggerRecord) -> TriggerRecord:
        current = rec.tx.get_trigger(trigger.tenant, trigger.id)
        if current is None:  # pragma: no cover - it was read earlier in this transaction
            raise NotFound(f"trigger {trigger.id!r} not found")
        return current
