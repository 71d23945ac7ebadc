"""The reconciler pass: repairs what a crash or a lost message left behind, and trims the event log.

One pass (:meth:`Reconciler.reconcile`, run by Beat or the embedded runner through
:meth:`engine.service.Service.reconcile`) wakes expired leases, re-sends lost step messages,
fires due timers, starts event-log scans a waiter still owes, times out overdue executions and
routes events whose router died; each item is one use case in its own transaction.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from engine.errors import ConveyorError
from engine.orchestration import control
from engine.orchestration import steps as step_cases
from engine.orchestration.recorder import Recorder
from engine.ports import DUE_FIELD
from engine.records import ExecutionRecord, StepRecord, WaiterRecord
from engine.router import EventRouter
from engine.states import StepStatus

if TYPE_CHECKING:
    from engine.service import Service

log = structlog.get_logger("conveyor.service")

#: What a repair returns when another reconciler was elected for it (see :meth:`Reconciler.elected`).
ELSEWHERE = object()


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconciler pass did, by kind."""

    expired_leases: int = 0
    timers: int = 0
    redispatched: int = 0
    timed_out: int = 0
    #: External events routed by this pass because their router did not finish (it died).
    routed_events: int = 0
    #: Steps waiting for an event whose event-log scan was not done after they started waiting.
    scans: int = 0
    #: Routed external events deleted from the event log, past ``event_retention_seconds``
    #: (housekeeping, not a repair: not in ``total``).
    trimmed_events: int = 0
    #: Executions deleted because their retention passed (housekeeping too; engine/retention.py).
    purged_executions: int = 0
    #: Items that raised (e.g. a Firestore execution whose documents a crashed worker's open
    #: transaction still locks); they are retried by the next pass.
    failed: int = 0
    #: Stale QUEUED steps left alone because the broker still holds their message.
    held: int = 0
    #: Repairs left to another reconciler that was elected for them first (see
    #: :meth:`Reconciler.elected`): two reconcilers ran at once.
    left_to_another: int = 0
    #: False when the pass stopped at its time budget (or was asked to stop) with work left;
    #: the next pass goes on from there.
    complete: bool = True

    @property
    def total(self) -> int:
        return self.expired_leases + self.timers + self.redispatched + self.timed_out + self.routed_events + self.scans


_KINDS = ("expired_leases", "timers", "redispatched", "timed_out", "routed_events", "scans")


class _Pass:
    """The bookkeeping of one reconciler pass: its budget, its counts, its per-item error guard."""

    def __init__(self, service: Service, should_stop: Callable[[], bool]) -> None:
        self.service = service
        self.should_stop = should_stop
        self.ends = time.monotonic() + service.settings.reconcile_pass_seconds
        self.counts: dict[str, int] = dict.fromkeys(_KINDS, 0)
        self.failed = 0
        self.held = 0
        self.left_to_another = 0
        self.cut_short = False
        self._lock = threading.Lock()

    def over(self) -> bool:
        if not self.cut_short and (self.should_stop() or time.monotonic() >= self.ends):
            self.cut_short = True
        return self.cut_short

    def run(self, kind: str, actions: list[Callable[[], object]]) -> None:
        """Run the actions (each one transaction or one scan) until the budget is spent.

        ``reconcile_concurrency`` at a time: items are independent records, and a transaction
        waits mostly for the store, so a burst of due timers is woken in a fraction of the
        time. The list (oldest first) is walked from a random place, wrapping around, so two
        reconcilers that did not coordinate (two beats without their lease) mostly work on
        different records; where they meet, :meth:`Reconciler.elected` lets one of them do the
        repair. An action returning False found nothing to do and is not counted. Every action
        started is finished before this returns: a pass never leaves a transaction behind.
        """
        start = random.randrange(len(actions)) if actions else 0  # noqa: S311  # not a secret
        actions = actions[start:] + actions[:start]
        workers = min(len(actions), self.service.settings.reconcile_concurrency)
        if workers <= 1:
            for action in actions:
                self._one(kind, action)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="conveyor-reconcile") as pool:
            list(pool.map(lambda action: self._one(kind, action), actions))

    def _one(self, kind: str, action: Callable[[], object]) -> None:
        if self.over():
            return
        try:
            done = action()
        except ConveyorError as exc:
            # One stuck item must not stop the pass for every other execution and tenant.
            with self._lock:
                self.failed += 1
            log.warning("reconciler item failed; the next pass retries it", kind=kind, error=str(exc))
            return
        with self._lock:
            if done is ELSEWHERE:
                self.left_to_another += 1
            elif done is not False:
                self.counts[kind] += 1

    def report(self) -> ReconcileReport:
        return ReconcileReport(
            **self.counts,
            failed=self.failed,
            held=self.held,
            left_to_another=self.left_to_another,
            complete=not self.cut_short,
        )


class Reconciler:
    """Runs reconciler passes over a service's store; remembers where the lost-message scan stopped."""

    def __init__(self, service: Service) -> None:
        self.service = service
        #: Where the scan for lost messages goes on in the next pass (the last step it looked at).
        self._lost_cursor: StepRecord | None = None

    def reconcile(self, should_stop: Callable[[], bool] = lambda: False) -> ReconcileReport:
        """One pass: expired leases, lost messages, due timers and passed deadlines, in that order;
        then housekeeping: the event log trimmed, executions past their retention deleted.

        Bounded in work (``reconcile_batch`` records of each kind) and in time
        (``reconcile_pass_seconds``, checked between items, as is ``should_stop``): whatever is
        left is due still and the next pass finds it. Callers must not overlap passes (see
        ``docs/architecture.md``); a second, uncoordinated reconciler is harmless: each repair
        is elected to one of them (:meth:`elected`).
        """
        service = self.service
        store, settings, now = service.store, service.settings, service.clock.now()
        batch = settings.reconcile_batch
        job = _Pass(service, should_stop)
        expired = store.due_steps(StepStatus.RUNNING, now, batch)
        job.run("expired_leases", [self._repair_step("expired_leases", step, self._expire(step)) for step in expired])
        if not job.over():
            self._resend_lost(job, now)
        if not job.over():
            timers = [
                *store.due_steps(StepStatus.RETRY_WAIT, now, batch),
                *store.due_steps(StepStatus.WAITING, now, batch),
            ]
            scans = [step for step in timers if (step.wait or {}).get("scan_pending")]
            wakes = [self._repair_step("timers", step, self._wake(step)) for step in timers if step not in scans]
            job.run("timers", wakes)
            job.run("scans", [self._scan(step) for step in scans])
        if not job.over():
            overdue = store.overdue_executions(now, batch)
            job.run("timed_out", [self._repair_execution(execution) for execution in overdue])
        if not job.over():
            job.counts["routed_events"] += EventRouter(service).route_due(now - settings.event_route_after, batch)
        trimmed = self._trim_event_log(job, now)
        purged, failed = service.purger.purge_expired(now, job.over)
        job.failed += failed
        report = replace(job.report(), trimmed_events=trimmed, purged_executions=purged)
        service.telemetry.reconciled({**job.counts, "failed": job.failed})
        service.telemetry.executions_purged(purged, "expired")
        return report

    def _trim_event_log(self, job: _Pass, now: float) -> int:
        """Delete routed events past their retention, a batch at a time while the pass has time.

        Batches go on until one comes back short, so trimming keeps up with events arriving
        faster than one batch per pass; what is left is trimmed by the next pass.
        """
        settings = self.service.settings
        batch, before, trimmed = settings.reconcile_batch, now - settings.event_retention_seconds, 0
        while not job.over():
            try:
                deleted = self.service.store.trim_inbound_events(before, batch)
            except ConveyorError as exc:  # the next pass trims them
                log.warning("trimming the event log failed", error=str(exc))
                job.failed += 1
                break
            trimmed += deleted
            if deleted < batch:
                break
        return trimmed

    def _resend_lost(self, job: _Pass, now: float) -> None:
        """Send again up to a batch of QUEUED steps whose message is old and not held by the broker.

        Under a backlog most old QUEUED steps are only waiting: the ledger says so, and the
        scan pages past them (going on where the last pass stopped) to find the lost ones.
        """
        store, settings, ledger = self.service.store, self.service.settings, self.service.ledger
        batch = settings.reconcile_batch
        stale_before = now - settings.redispatch_after
        held_since = now - settings.redispatch_held_after
        lost: list[StepRecord] = []
        while len(lost) < batch and not job.over():
            page = store.due_steps(StepStatus.QUEUED, stale_before, batch, after=self._lost_cursor)
            held = ledger.held(page, held_since) if ledger is not None else [False] * len(page)
            lost += [step for step, is_held in zip(page, held, strict=True) if not is_held]
            job.held += sum(held)
            self._lost_cursor = page[-1] if len(page) == batch else None
            if self._lost_cursor is None:
                break  # the end of the list: the next pass starts from the oldest again
        resends = [self._repair_step("redispatched", step, self._redispatch(step, stale_before)) for step in lost]
        job.run("redispatched", resends)
        if job.over():
            self._lost_cursor = None  # some found were not sent: look from the oldest again

    def _repair_step(self, kind: str, step: StepRecord, use_case: Callable[[Recorder], object]) -> Callable[[], object]:
        due = getattr(step, DUE_FIELD[step.status])
        return self.elected(f"{kind}:{step.key}:{due!r}", step.tenant, step.execution_id, use_case)

    def _repair_execution(self, execution: ExecutionRecord) -> Callable[[], object]:
        name = f"timed_out:{execution.deadline_at!r}"
        return self.elected(name, execution.tenant, execution.id, self._time_out(execution))

    def elected(
        self, name: str, tenant: str, execution_id: str, use_case: Callable[[Recorder], object]
    ) -> Callable[[], object]:
        """The repair's transaction, run only by the reconciler elected for it in this interval.

        Two reconcilers that run at once (two beats without their lease) list the same due
        records. Both transactions would read a record, then both commit writes to it: on
        Firestore each commit then waits for the other's read lock, a deadlock the emulator
        breaks only by a 2 s lock timeout (and real Firestore by aborting one), while the pass
        waits for its stuck item and every timer due meanwhile waits for the next pass. So
        first each one writes a marker named after the repair (``Store.mark_once``, one write
        outside any transaction, no lock held): the one that wrote it transacts, the other
        leaves the repair (``ELSEWHERE``). The marker names the reconcile interval too, so a
        repair whose elected reconciler failed or died is elected anew by the next pass.
        """
        service = self.service

        def repair() -> object:
            interval = int(service.clock.now() // service.settings.reconcile_interval)
            if not service.store.mark_once(tenant, execution_id, f"repair:{name}:{interval}"):
                return ELSEWHERE
            return service.transact(use_case)

        return repair

    def _scan(self, step: StepRecord) -> Callable[[], None]:
        waiter = _waiter_of(step)

        def scan() -> None:  # counted whether or not it found an event
            self.service.scan_events(waiter)

        return scan

    def _expire(self, step: StepRecord) -> Callable[[Recorder], None]:
        workflows = self.service.workflows
        return lambda rec: step_cases.expire_lease(rec, workflows, step.tenant, step.execution_id, step.key)

    def _redispatch(self, step: StepRecord, stale_before: float) -> Callable[[Recorder], bool]:
        return lambda rec: step_cases.redispatch(rec, step.tenant, step.execution_id, step.key, stale_before)

    def _time_out(self, execution: ExecutionRecord) -> Callable[[Recorder], None]:
        return lambda rec: control.time_out(rec, self.service.workflows, execution.tenant, execution.id)

    def _wake(self, step: StepRecord) -> Callable[[Recorder], None]:
        workflows = self.service.workflows
        return lambda rec: step_cases.wake_timer(rec, workflows, step.tenant, step.execution_id, step.key)


def _waiter_of(step: StepRecord) -> WaiterRecord:
    wait = step.wait or {}
    return WaiterRecord(step.tenant, step.execution_id, step.key, str(wait["route"]), float(wait["since"]))
