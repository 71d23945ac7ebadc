"""The application service: every use case, wrapped in a transaction, effects performed after commit.

The API, Celery tasks, Beat and the CLI talk to Conveyor only through :class:`Service`. The
larger use cases live in their own modules and are reached through its attributes:
``reconciler`` (:mod:`engine.reconcile`), ``intake`` (:mod:`engine.event_intake`, with the
quota-bounded trigger starts of :mod:`engine.trigger_starts`), ``approval_links``
(:mod:`engine.approval_links`) and ``rewards`` (:mod:`engine.rewards`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from engine import eventlog, payloads
from engine.approval_links import ApprovalLinks
from engine.compile import CompiledWorkflow, compile_workflow
from engine.errors import (
    ConveyorError,
    NotFound,
    QuotaExceeded,
)
from engine.event_intake import EventIntake
from engine.events import check_history_cursor
from engine.model import canonical_json
from engine.orchestration import approvals, children, control
from engine.orchestration import steps as step_cases
from engine.orchestration.recorder import Effects, FaninCheck, Recorder
from engine.orchestration.schedule_runs import FireReport, ScheduleRuns
from engine.orchestration.workflows import Workflows
from engine.ports import (
    AgentData,
    Clock,
    DecisionStats,
    Dispatcher,
    EventSink,
    MessageLedger,
    StepLogStore,
    Store,
    Telemetry,
    Transaction,
)
from engine.quota import ActiveCounts
from engine.reconcile import Reconciler, ReconcileReport
from engine.records import (
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    Page,
    StepRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.retention import Purger, RetentionPolicy
from engine.rewards import Rewards
from engine.search import ExecutionFilter
from engine.settings import Settings
from engine.states import STEP_ACTIVE, ExecutionStatus
from engine.steplogs.pages import LogPage, read_page
from engine.telemetry import NoTelemetry
from engine.trigger_starts import TriggerStarts

T = TypeVar("T")
log = structlog.get_logger("conveyor.service")


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()


@dataclass(frozen=True)
class StartResult:
    execution: ExecutionRecord
    created: bool


@dataclass(frozen=True)
class ApplyResult:
    version: WorkflowVersionRecord
    created: bool


class Service:
    """Conveyor's use cases over a store, a dispatcher and a live event sink."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        events: EventSink,
        settings: Settings | None = None,
        clock: Clock | None = None,
        ledger: MessageLedger | None = None,
        telemetry: Telemetry | None = None,
        step_logs: StepLogStore | None = None,
        decisions: DecisionStats | None = None,
        agent_data: AgentData | None = None,
    ) -> None:
        self.store = store
        #: Bandit counts (rewards, estimates); None: those use cases are refused.
        self.decisions = decisions
        #: Where finished attempts' logs are kept; None: step logs are not captured.
        self.step_logs = step_logs
        self.dispatcher = dispatcher
        self.events = events
        #: What the broker still holds; without one, every stale QUEUED step is sent again.
        self.ledger = ledger
        self.telemetry: Telemetry = telemetry or NoTelemetry()
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        self.timing = step_cases.Timing(self.settings.lease_seconds, self.settings.short_timer_threshold)
        self.workflows = Workflows(lambda tenant, name, version: self.get_workflow(tenant, name, version).definition)
        self.active_counts = ActiveCounts(store.count_active_executions, self.settings.max_concurrent_executions)
        self.trigger_starts = TriggerStarts(self)
        self.schedules = ScheduleRuns(
            self.trigger_starts.start, self.workflows, lambda tenant: self.active_counts.budget(tenant, 1)
        )
        #: The use cases behind the event router: events accepted with their trigger starts.
        self.intake = EventIntake(self, self.trigger_starts)
        self.reconciler = Reconciler(self)
        self.approval_links = ApprovalLinks(self)
        #: Rewards and estimates of bandit routing decisions (refused without ``decisions``).
        self.rewards = Rewards(self)
        self.links = children.Links(self.workflows)
        self.retention = RetentionPolicy(self.workflows, self.settings.execution_retention_days)
        self.purger = Purger(
            store,
            self.workflows,
            step_logs=step_logs,
            agent_data=agent_data,
            batch=self.settings.reconcile_batch,
            concurrency=self.settings.reconcile_concurrency,
        )

    # --- plumbing -------------------------------------------------------------------------

    def transact(self, use_case: Callable[[Recorder], T], *, durable: bool = True) -> T:
        """Run a use case in one transaction, then publish its events and dispatch its steps.

        ``durable=False`` is for the engine's own progress (see :meth:`commit`)."""
        result, effects = self.commit(use_case, durable=durable)
        self.perform(effects)
        return result

    def _run_outcome(
        self, use_case: Callable[[Recorder], step_cases.Claimed | None], follow: step_cases.Timing | None
    ) -> step_cases.Claimed | None:
        """Record a step's outcome; the step the caller is to run next, if it claimed one.

        That is the follower the outcome's own transaction claimed, or else (with ``follow``)
        one claimed by the transaction that finished a foreach after this outcome's commit.
        """
        claimed, effects = self.commit(use_case, durable=False)
        finisher = self.perform(effects, follow=follow if claimed is None else None)
        return claimed or finisher

    def commit(self, use_case: Callable[[Recorder], T], *, durable: bool = True) -> tuple[T, Effects]:
        """Run a use case in one transaction; its result and the effects of the attempt that committed.

        The commit is on disk before this returns (it survives a power loss), unless
        ``durable=False``: that is for the engine's own progress (claims and step outcomes),
        which a power loss may take back like a worker crash does, to be redone by recovery.
        Even then, a commit that ends an execution is made durable before anyone is told.
        """
        recorders: list[Recorder] = []

        def body(tx: Transaction) -> T:
            rec = Recorder(
                tx,
                self.clock.now(),
                max_foreach_items=self.settings.max_foreach_items,
                fanin_check_seconds=self.settings.lease_seconds,
                schedule_hook=self.schedules.execution_moved,
                links=self.links,
                retention=self.retention,
            )
            recorders.append(rec)  # the store may retry: only the last attempt committed
            return use_case(rec)

        result = self.store.atomic(body, durable=durable)
        effects = recorders[-1].effects
        if not durable and effects.settled:
            self.store.sync()
        return result, effects

    def perform(self, effects: Effects, *, follow: step_cases.Timing | None = None) -> step_cases.Claimed | None:
        """Dispatch first: a step message matters more than live fan-out (history is in the store).

        Fan-in checks come last: each is one unlocked count, asked for only by the few items
        that may have ended last, and only a foreach whose items have all ended costs a
        transaction. A check lost to a crash or an error here is made by the reconciler when
        the foreach parent's lease passes. With ``follow``, a step made ready by finishing a
        foreach may be claimed for the caller and is returned (see :meth:`complete`).
        """
        if effects.dispatches:
            self.dispatcher.dispatch(effects.dispatches)
        if effects.events:
            self.events.publish(effects.events)
        for execution in effects.started:
            self.telemetry.execution_started(execution.workflow)
            self.active_counts.started(execution.tenant)
        for execution in effects.settled:
            self.telemetry.execution_settled(
                execution.workflow, execution.status.value, (execution.finished_at or 0.0) - execution.created_at
            )
        for waiter in effects.waiters:
            try:
                self.scan_events(waiter)
            except ConveyorError as exc:
                log.warning(
                    "event-log scan failed; the reconciler repeats it", step_key=waiter.step_key, error=str(exc)
                )
        claimed = None
        for check in effects.fanin_checks:
            try:
                claimed = self._check_fanin(check, follow if claimed is None else None) or claimed
            except ConveyorError as exc:
                log.warning("fan-in check failed; the reconciler repeats it", step_id=check.step_id, error=str(exc))
        return claimed

    def _check_fanin(self, check: FaninCheck, follow: step_cases.Timing | None = None) -> step_cases.Claimed | None:
        if check.last_items:
            keys = check.last_items
            last = self.store.read(lambda reads: reads.get_steps(check.tenant, check.execution_id, keys))
            if len(last) < len(keys) or any(item.status in STEP_ACTIVE for item in last.values()):
                return None  # a chain has not ended: its last item asks again when it does
        if self.store.count_active_items(check.tenant, check.execution_id, check.step_id) > 0:
            return None
        if not self.store.mark_once(check.tenant, check.execution_id, check.marker):
            return None
        return self._run_outcome(
            lambda rec: step_cases.check_fanin(
                rec, self.workflows, check.tenant, check.execution_id, check.step_id, follow
            ),
            follow,
        )

    def check_payload(self, value: Any, what: str) -> None:
        """Refuse ``value`` unless it is plain JSON within ``max_payload_bytes`` (see ``engine.payloads``)."""
        payloads.check_payload(value, self.settings.max_payload_bytes, what)

    # --- workflows ------------------------------------------------------------------------

    def _check_definition(self, definition: dict[str, Any] | str) -> None:
        # Checked as sent: compiling turns NaN and Infinity into null, which would be saved.
        if not isinstance(definition, str):
            self.check_payload(definition, "workflow definition")

    def validate_workflow(self, definition: dict[str, Any] | str) -> CompiledWorkflow:
        """Compile a definition without saving it; raises ``DefinitionInvalid`` with every problem."""
        self._check_definition(definition)
        return compile_workflow(definition)

    def apply_workflow(self, tenant: str, definition: dict[str, Any] | str) -> ApplyResult:
        """Save a definition as the next version; an unchanged definition returns the latest version."""
        self._check_definition(definition)
        compiled = compile_workflow(definition)
        document = compiled.definition.to_document()
        self.check_payload(document, "workflow definition")
        digest = hashlib.sha256(canonical_json(document).encode()).hexdigest()

        def body(tx: Transaction) -> ApplyResult:
            latest = tx.latest_workflow_version(tenant, compiled.definition.name)
            if latest is not None and latest.digest == digest and not latest.archived:
                return ApplyResult(latest, False)
            record = WorkflowVersionRecord(
                tenant=tenant,
                name=compiled.definition.name,
                version=(latest.version + 1) if latest else 1,
                definition=document,
                digest=digest,
                created_at=self.clock.now(),
            )
            tx.put_workflow_version(record)
            return ApplyResult(record, True)

        return self.store.atomic(body)

    def get_workflow(self, tenant: str, name: str, version: int | None = None) -> WorkflowVersionRecord:
        record = self.store.get_workflow_version(tenant, name, version)
        if record is None:
            which = f"version {version} of " if version is not None else ""
            raise NotFound(f"{which}workflow {name!r} not found")
        return record

    def list_workflows(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        return self.store.list_workflows(tenant, cursor=cursor, limit=limit)

    def list_workflow_versions(self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        return self.store.list_workflow_versions(tenant, name, cursor=cursor, limit=limit)

    def archive_workflow(self, tenant: str, name: str, archived: bool = True) -> None:
        self.store.set_workflow_archived(tenant, name, archived)

    def _latest(self, tx: Transaction, tenant: str, name: str) -> tuple[CompiledWorkflow, int]:
        latest = tx.latest_workflow_version(tenant, name)
        if latest is None:
            raise NotFound(f"workflow {name!r} not found")
        if latest.archived:
            raise NotFound(f"workflow {name!r} is archived")
        return self.compiled(tenant, name, latest.version), latest.version

    def compiled(self, tenant: str, name: str, version: int) -> CompiledWorkflow:
        """The compiled definition of an immutable version, cached in process."""
        return self.workflows.get(tenant, name, version)

    # --- executions -----------------------------------------------------------------------

    def start(
        self,
        tenant: str,
        workflow: str,
        input: Any = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        labels: dict[str, str] | None = None,
        enforce_quota: bool = False,
    ) -> StartResult:
        """Start an execution of a workflow version (the latest by default).

        The latest version is looked up inside the starting transaction (one round trip with
        the idempotency check, and never older than a version applied just before).
        """
        payload = {} if input is None else input
        pinned = None if version is None else (self.compiled(tenant, workflow, version), version)
        self.check_payload(payload, "execution input")
        if enforce_quota:
            active = self.store.count_active_executions(tenant)
            if active >= self.settings.max_concurrent_executions:
                raise QuotaExceeded(
                    f"tenant has {active} active executions; the limit is {self.settings.max_concurrent_executions}"
                )

        execution, created = self.transact(
            lambda rec: self.start_in(rec, tenant, workflow, payload, pinned, idempotency_key, labels)
        )
        return StartResult(execution, created)

    def start_in(
        self,
        rec: Recorder,
        tenant: str,
        workflow: str,
        payload: Any,
        pinned: tuple[CompiledWorkflow, int] | None,
        idempotency_key: str | None,
        labels: dict[str, str] | None,
        trigger_id: str | None = None,
    ) -> tuple[ExecutionRecord, bool]:
        """The start use case inside ``rec``'s transaction (the latest version unless ``pinned``)."""
        compiled, number = pinned if pinned is not None else self._latest(rec.tx, tenant, workflow)
        compiled.validate_input(payload)
        return control.start(
            rec,
            compiled,
            tenant=tenant,
            version=number,
            input=payload,
            idempotency_key=idempotency_key,
            labels=labels,
            trigger_id=trigger_id,
        )

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord:
        execution = self.store.get_execution(tenant, execution_id)
        if execution is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return execution

    def list_executions(self, tenant: str, *, cursor: str | None = None, limit: int = 50, **filters: Any) -> Page:
        """Executions newest first; ``filters`` are those of :meth:`ExecutionFilter.of` (checked there)."""
        return self.store.list_executions(tenant, ExecutionFilter.of(**filters), cursor=cursor, limit=limit)

    def count_executions(self, tenant: str, **filters: Any) -> dict[ExecutionStatus, int]:
        """Executions per status matching ``filters`` (those of :meth:`ExecutionFilter.of` but ``status``)."""
        return self.store.count_executions(tenant, ExecutionFilter.of(**filters).for_counts())

    def list_steps(self, tenant: str, execution_id: str) -> list[StepRecord]:
        self.get_execution(tenant, execution_id)
        return self.store.list_steps(tenant, execution_id)

    def step_logs_page(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        *,
        run: int | None = None,
        attempt: int | None = None,
        cursor: str | None = None,
        limit: int = 200,
    ) -> LogPage:
        """A page of what a step's finished attempts logged (see :mod:`engine.steplogs`)."""
        self.get_execution(tenant, execution_id)
        if step_key not in self.store.read(lambda reads: reads.get_steps(tenant, execution_id, [step_key])):
            raise NotFound(f"step {step_key!r} not found in execution {execution_id!r}")
        if self.step_logs is None:
            return LogPage([], [])
        return read_page(
            self.step_logs, tenant, execution_id, step_key, run=run, attempt=attempt, cursor=cursor, limit=limit
        )

    def list_events(self, tenant: str, execution_id: str, *, after: str | None = None, limit: int = 500) -> Page:
        """A page of the execution's history after the event id ``after`` (one that is no event id: 422)."""
        self.get_execution(tenant, execution_id)
        if after is not None:
            check_history_cursor(after)
        return self.store.list_events(tenant, execution_id, after=after, limit=limit)

    def delete_execution(self, tenant: str, execution_id: str) -> None:
        """Delete a finished execution now, with everything derived from it (engine/retention.py)."""
        self.purger.delete(tenant, execution_id, self.clock.now())
        self.telemetry.executions_purged(1, "deleted")

    def cancel(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self.transact(lambda rec: control.cancel(rec, self.workflows, tenant, execution_id))

    def retry(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self.transact(lambda rec: control.retry(rec, self.workflows, tenant, execution_id))

    def pause(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self.transact(lambda rec: control.pause(rec, self.workflows, tenant, execution_id))

    def resume(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self.transact(lambda rec: control.resume(rec, self.workflows, tenant, execution_id))

    def signal(self, tenant: str, execution_id: str, step_key: str, payload: Any) -> StepRecord:
        self.check_payload(payload, "signal payload")
        return self.transact(
            lambda rec: step_cases.signal(rec, self.workflows, tenant, execution_id, step_key, payload)
        )

    # --- approvals ----------------------------------------------------------------------------

    def decide_approval(
        self, tenant: str, execution_id: str, step_key: str, decision: approvals.Decision
    ) -> StepRecord:
        """Approve or reject a waiting approval step; the decider's role must be one the step allows."""
        return self.transact(
            lambda rec: approvals.decide(rec, self.workflows, tenant, execution_id, step_key, decision)
        )

    # --- steps (called by workers) ----------------------------------------------------------

    def claim(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        *,
        sent_epoch: int | None = None,
        started_at: float | None = None,
    ) -> step_cases.Claimed | None:
        """Claim a step for its message; ``sent_epoch`` is the epoch the message carries, if any.
        ``started_at``: when the worker started running it unclaimed (kept as the attempt's start)."""
        return self.transact(
            lambda rec: step_cases.claim(
                rec, self.workflows, tenant, execution_id, step_key, self.timing, sent_epoch, started_at
            ),
            durable=False,
        )

    def peek(self, tenant: str, execution_id: str, step_key: str) -> step_cases.Claimed | None:
        """The step as a claim would leave it, if it may run before it is claimed (see ``steps.peek``).

        Nothing is written: record its outcome with ``step_cases.Unclaimed`` as the fence.
        """
        now = self.clock.now()
        stale_before = now - self.settings.redispatch_after / 2
        return self.store.read(
            lambda reads: step_cases.peek(reads, self.workflows, tenant, execution_id, step_key, now, stale_before)
        )

    def still_owns(self, tenant: str, execution_id: str, step_key: str, fence: step_cases.Fence) -> bool:
        """Whether the worker holding ``fence`` still owns the step: one unlocked read, no write."""
        steps = self.store.read(lambda reads: reads.get_steps(tenant, execution_id, [step_key]))
        return step_cases.still_owned(steps.get(step_key), fence)

    def heartbeat(self, tenant: str, execution_id: str, step_key: str, epoch: int) -> None:
        self.transact(
            lambda rec: step_cases.heartbeat(rec, tenant, execution_id, step_key, epoch, self.timing), durable=False
        )

    def complete(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        fence: step_cases.Fence,
        output: Any,
        *,
        follow: bool = False,
        event: dict[str, Any] | None = None,
    ) -> step_cases.Claimed | None:
        """Record a step's output. With ``follow``, a single step this makes ready to run at once
        on the same queue is claimed for the caller and returned instead of dispatched.
        ``event`` is data for the step's ``step.succeeded`` event (e.g. a routing decision)."""
        self.check_payload(output, f"output of step {step_key!r}")
        return self._run_outcome(
            lambda rec: step_cases.complete(
                rec,
                self.workflows,
                tenant,
                execution_id,
                step_key,
                fence,
                output,
                self.timing,
                follow=follow,
                event=event,
            ),
            self.timing if follow else None,
        )

    def park(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        fence: step_cases.Fence,
        *,
        until: float | None,
        on_wake: str = "succeed",
        match: str | None = None,
        event: step_cases.EventWait | None = None,
        interrupt: dict[str, Any] | None = None,
        kind: str = "timer",
        details: dict[str, Any] | None = None,
    ) -> None:
        self.transact(
            lambda rec: step_cases.park(
                rec,
                self.workflows,
                tenant,
                execution_id,
                step_key,
                fence,
                until=until,
                on_wake=on_wake,
                match=match,
                interrupt=interrupt,
                timing=self.timing,
                event=event,
                kind=kind,
                details=details,
            )
        )

    def start_child(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        fence: step_cases.Fence,
        *,
        workflow: str,
        input: Any,
        version: int | None = None,
    ) -> None:
        """Start the child execution of a subworkflow step and park the step until it settles."""
        payload = {} if input is None else input
        self.check_payload(payload, f"input of the child of step {step_key!r}")

        def resolve(tx: Transaction) -> tuple[CompiledWorkflow, int]:
            if version is not None:
                return self.compiled(tenant, workflow, version), version
            return self._latest(tx, tenant, workflow)

        self.transact(
            lambda rec: children.start_child(
                rec,
                self.workflows,
                tenant,
                execution_id,
                step_key,
                fence,
                self.timing,
                resolve=resolve,
                input=payload,
                max_depth=self.settings.subworkflow_max_depth,
            )
        )

    # --- external events ----------------------------------------------------------------

    def deliver_event(self, waiter: WaiterRecord, event: InboundEventRecord) -> bool:
        """Offer an event from the log to a waiting step; whether it resumed the step."""
        delivery = step_cases.Delivery(
            "event",
            event.id,
            eventlog.event_view(event),
            event=eventlog.event_view(event),
            route=event.route,
            accepted_at=event.accepted_at,
        )
        return self.transact(lambda rec: step_cases.deliver_event(rec, self.workflows, waiter, delivery))

    def scan_events(self, waiter: WaiterRecord) -> bool:
        """Offer a new waiter the events of its route accepted since its execution started.

        Runs after the transaction that registered the waiter committed, so together with
        the router (which looks waiters up after committing an event) no event is missed.
        """
        for event in self.store.list_inbound_events(waiter.tenant, waiter.route, since=waiter.since):
            if self.deliver_event(waiter, event):
                return True
        self.transact(
            lambda rec: step_cases.finish_scan(rec, waiter.tenant, waiter.execution_id, waiter.step_key, self.timing)
        )
        return False

    def fail(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        fence: step_cases.Fence,
        error: dict[str, Any],
        *,
        retryable: bool,
    ) -> None:
        self.transact(
            lambda rec: step_cases.fail(
                rec, self.workflows, tenant, execution_id, step_key, fence, error, retryable, self.timing
            ),
            durable=False,
        )

    # --- schedules (called by beat) ---------------------------------------------------------

    def fire_trigger(self, tenant: str, trigger_id: str) -> FireReport:
        """Fire what one schedule trigger owes now, in one transaction (nothing if not due).

        Its starts count toward the tenant's quota of active executions: a fire over it is
        counted as skipped on the trigger, the reason in ``last_error``.
        """
        budgets = self.trigger_starts.budgets({tenant: 1})

        def use_case(rec: Recorder) -> FireReport:
            rec.start_budget = dict(budgets)
            return self.schedules.fire(rec, tenant, trigger_id)

        return self.transact(use_case)

    def fire_due_triggers(self, horizon: float = 1.0, limit: int = 200) -> float | None:
        """Fire every schedule trigger due now; the next fire time within ``horizon`` seconds, if any.

        A trigger that fails is logged and tried again by the next pass.
        """
        now = self.clock.now()
        upcoming: list[float] = []
        for trigger in self.store.due_triggers(now + horizon, limit):
            assert trigger.next_fire_at is not None
            if trigger.kind != "schedule":
                continue
            if trigger.next_fire_at > now:
                upcoming.append(trigger.next_fire_at)
                continue
            try:
                report = self.fire_trigger(trigger.tenant, trigger.id)
            except ConveyorError as exc:
                log.warning("firing a schedule failed; the next pass retries it", trigger_id=trigger.id, error=str(exc))
                continue
            if report.plan is not None:
                upcoming.append(report.plan.next_fire_at)
        return min(upcoming, default=None)

    # --- reconciler -------------------------------------------------------------------------

    def reconcile(self, should_stop: Callable[[], bool] = lambda: False) -> ReconcileReport:
        """One reconciler pass (see :meth:`engine.reconcile.Reconciler.reconcile`)."""
        return self.reconciler.reconcile(should_stop)

    def events_after(self, tenant: str, execution_id: str, after: str | None) -> list[EventRecord]:
        """All history events after ``after`` (used to fill gaps when a live stream resumes)."""
        events: list[EventRecord] = []
        cursor = after
        while True:
            page = self.store.list_events(tenant, execution_id, after=cursor, limit=500)
            events.extend(page.items)
            if page.next_cursor is None or not page.items:
                return events
            cursor = page.items[-1].id
