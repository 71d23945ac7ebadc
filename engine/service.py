"""The application service: every use case, wrapped in a transaction, effects performed after commit.

The API, Celery tasks, Beat and the CLI talk to Conveyor only through :class:`Service`.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import structlog

from engine import decisions, eventlog, payloads
from engine.compile import CompiledWorkflow, compile_workflow
from engine.durations import parse_duration
from engine.errors import (
    ConveyorError,
    InputInvalid,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
)
from engine.model import canonical_json
from engine.orchestration import approvals, children, control
from engine.orchestration import steps as step_cases
from engine.orchestration.recorder import Effects, FaninCheck, Recorder
from engine.orchestration.schedule_runs import FireReport, ScheduleRuns
from engine.orchestration.snapshot import open_snapshot
from engine.orchestration.workflows import Workflows
from engine.ports import (
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
from engine.records import (
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    Page,
    StepRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.router import EventRouter
from engine.search import ExecutionFilter
from engine.settings import Settings
from engine.states import STEP_ACTIVE, ExecutionStatus, StepStatus
from engine.steplogs.pages import LogPage, read_page
from engine.telemetry import NoTelemetry

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
    #: Items that raised (e.g. a Firestore execution whose documents a crashed worker's open
    #: transaction still locks); they are retried by the next pass.
    failed: int = 0
    #: Stale QUEUED steps left alone because the broker still holds their message.
    held: int = 0
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
        time. The list (oldest first) is walked from a random place, wrapping around: two
        reconcilers that did not coordinate (two beats without Redis) then move the same way
        from different places, one behind the other, and the one behind finds its items done
        already (a read, no write) instead of both locking the same record at once. An action
        returning False found nothing to do and is not counted. Every action started is
        finished before this returns: a pass never leaves a transaction behind.
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
            done = action() is not False
        except ConveyorError as exc:
            # One stuck item must not stop the pass for every other execution and tenant.
            with self._lock:
                self.failed += 1
            log.warning("reconciler item failed; the next pass retries it", kind=kind, error=str(exc))
            return
        if done:
            with self._lock:
                self.counts[kind] += 1

    def report(self) -> ReconcileReport:
        return ReconcileReport(**self.counts, failed=self.failed, held=self.held, complete=not self.cut_short)


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
        #: Where the scan for lost messages goes on in the next pass (the last step it looked at).
        self._lost_cursor: StepRecord | None = None
        self.telemetry: Telemetry = telemetry or NoTelemetry()
        self.settings = settings or Settings()
        self.clock: Clock = clock or SystemClock()
        self.timing = step_cases.Timing(self.settings.lease_seconds, self.settings.short_timer_threshold)
        self.workflows = Workflows(lambda tenant, name, version: self.get_workflow(tenant, name, version).definition)
        self.schedules = ScheduleRuns(self._start_for_trigger, self.workflows)
        self.active_counts = ActiveCounts(store.count_active_executions, self.settings.max_concurrent_executions)
        self.links = children.Links(self.workflows)

    # --- plumbing -------------------------------------------------------------------------

    def _run(self, use_case: Callable[[Recorder], T]) -> T:
        """Run a use case in one transaction, then publish its events and dispatch its steps."""
        result, effects = self._commit(use_case)
        self.perform(effects)
        return result

    def _run_outcome(
        self, use_case: Callable[[Recorder], step_cases.Claimed | None], follow: step_cases.Timing | None
    ) -> step_cases.Claimed | None:
        """Record a step's outcome; the step the caller is to run next, if it claimed one.

        That is the follower the outcome's own transaction claimed, or else (with ``follow``)
        one claimed by the transaction that finished a foreach after this outcome's commit.
        """
        claimed, effects = self._commit(use_case)
        finisher = self.perform(effects, follow=follow if claimed is None else None)
        return claimed or finisher

    def _commit(self, use_case: Callable[[Recorder], T]) -> tuple[T, Effects]:
        """Run a use case in one transaction; its result and the effects of the attempt that committed."""
        recorders: list[Recorder] = []

        def body(tx: Transaction) -> T:
            rec = Recorder(
                tx,
                self.clock.now(),
                max_foreach_items=self.settings.max_foreach_items,
                fanin_check_seconds=self.settings.lease_seconds,
                schedule_hook=self.schedules.execution_moved,
                links=self.links,
            )
            recorders.append(rec)  # the store may retry: only the last attempt committed
            return use_case(rec)

        result = self.store.atomic(body)
        return result, recorders[-1].effects

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

        execution, created = self._run(
            lambda rec: self._start_in(rec, tenant, workflow, payload, pinned, idempotency_key, labels)
        )
        return StartResult(execution, created)

    def _start_in(
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

    def _start_for_trigger(
        self, rec: Recorder, tenant: str, workflow: str, payload: Any, idempotency_key: str, trigger_id: str
    ) -> ExecutionRecord:
        """A trigger's start; ``QuotaExceeded`` (nothing written) when it would pass the tenant's quota.

        The quota is checked when the use case set ``rec.start_budget`` for the tenant; a start
        whose key already has its execution returns that one, whatever the quota.
        """
        self.check_payload(payload, "trigger input")
        budget = rec.start_budget.get(tenant)
        if budget is not None and budget <= 0:
            existing = rec.tx.find_execution_by_key(tenant, idempotency_key)
            if existing is not None:
                return existing
            limit = self.settings.max_concurrent_executions
            raise QuotaExceeded(f"the tenant has {limit - budget} active executions; the limit is {limit}")
        execution, created = self._start_in(rec, tenant, workflow, payload, None, idempotency_key, None, trigger_id)
        if created and budget is not None:
            rec.start_budget[tenant] = budget - 1
        return execution

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
        self.get_execution(tenant, execution_id)
        return self.store.list_events(tenant, execution_id, after=after, limit=limit)

    def cancel(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self._run(lambda rec: control.cancel(rec, self.workflows, tenant, execution_id))

    def retry(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self._run(lambda rec: control.retry(rec, self.workflows, tenant, execution_id))

    def pause(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self._run(lambda rec: control.pause(rec, self.workflows, tenant, execution_id))

    def resume(self, tenant: str, execution_id: str) -> ExecutionRecord:
        return self._run(lambda rec: control.resume(rec, self.workflows, tenant, execution_id))

    def signal(self, tenant: str, execution_id: str, step_key: str, payload: Any) -> StepRecord:
        self.check_payload(payload, "signal payload")
        return self._run(lambda rec: step_cases.signal(rec, self.workflows, tenant, execution_id, step_key, payload))

    # --- routing decisions (ai.route and switch, strategy: bandit) ---------------------------

    def _decision_stats(self) -> DecisionStats:
        if self.decisions is None:
            raise ConveyorError("no decision statistics are configured in this process")
        return self.decisions

    def reward(self, tenant: str, execution_id: str, step_key: str, reward: float) -> bool:
        """Count a reward (0..1) for the bandit decision step ``step_key`` made; exactly once per
        step and execution (``False``: it was counted before)."""
        step = self.store.read(lambda reads: reads.get_steps(tenant, execution_id, [step_key])).get(step_key)
        if step is None or step.status is not StepStatus.SUCCEEDED:
            raise NotFound(f"no decision of step {step_key!r} in execution {execution_id!r}")
        marker = f"reward:{step_key}"
        stats = self._decision_stats()
        return decisions.reward_decision(stats, tenant, execution_id, marker, step.output, reward, self.clock.now())

    def decision_estimates(self, tenant: str, workflow: str, step_id: str) -> dict[str, Any]:
        """Counts and posteriors of every route (case) the bandit of step ``step_id`` has tried
        (an ``ai.route`` or ``switch`` step with strategy ``bandit``); decayed to now if it decays."""
        definition = self.get_workflow(tenant, workflow).definition
        step = next((s for s in definition.get("steps", []) if s.get("id") == step_id), None)
        config = (step or {}).get("with", {})
        if step is None or step.get("type") not in ("ai.route", "switch") or config.get("strategy") != "bandit":
            raise NotFound(f"workflow {workflow!r} has no ai.route or switch step {step_id!r} with strategy 'bandit'")
        half_life = config.get("half_life")
        return decisions.estimates(
            self._decision_stats(),
            tenant,
            config.get("bandit") or f"{workflow}/{step_id}",
            prior=float(config.get("prior", 1.0)),
            half_life=parse_duration(half_life) if half_life is not None else None,
            now=self.clock.now(),
        )

    # --- approvals ----------------------------------------------------------------------------

    def decide_approval(
        self, tenant: str, execution_id: str, step_key: str, decision: approvals.Decision
    ) -> StepRecord:
        """Approve or reject a waiting approval step; the decider's role must be one the step allows."""
        return self._run(
            lambda rec: approvals.decide(rec, self.workflows, tenant, execution_id, step_key, decision)
        )

    def approval_link(
        self, tenant: str, execution_id: str, step_key: str, *, role: str, by: str, ttl: float | None = None
    ) -> tuple[str, approvals.LinkClaims]:
        """A signed single-use token that decides ``step_key`` on behalf of ``by`` (and its claims)."""
        ttl = self.settings.approval_link_ttl if ttl is None else min(ttl, self.settings.approval_link_ttl)
        now = self.clock.now()
        claims = self.store.read(
            lambda reads: approvals.link_claims(
                open_snapshot(reads, self.workflows, tenant, execution_id, [step_key]),
                step_key,
                role=role,
                by=by,
                now=now,
                ttl=ttl,
            )
        )
        return approvals.sign_link(claims, self._link_secret()), claims

    def verify_approval_link(self, token: str) -> approvals.LinkClaims:
        """The claims of a genuine, unexpired approval link (``AuthenticationFailed`` otherwise)."""
        return approvals.verify_link(token, self._link_secret(), self.clock.now())

    def decide_by_link(self, token: str, approved: bool, comment: str | None = None) -> StepRecord:
        """Decide with a signed link: valid once, for the wait it was issued in, until it expires."""
        claims = self.verify_approval_link(token)
        decision = approvals.Decision(approved, claims.by, claims.role, comment, via="link")
        return self._run(
            lambda rec: approvals.decide(
                rec, self.workflows, claims.tenant, claims.execution_id, claims.step_key, decision, epoch=claims.epoch
            )
        )

    def _link_secret(self) -> bytes:
        if self.settings.approval_link_secret is None:
            raise InvalidRequest("approval links are disabled: set CONVEYOR_APPROVAL_LINK_SECRET to enable them")
        return self.settings.approval_link_secret.get_secret_value().encode()

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
        return self._run(
            lambda rec: step_cases.claim(
                rec, self.workflows, tenant, execution_id, step_key, self.timing, sent_epoch, started_at
            )
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
        self._run(lambda rec: step_cases.heartbeat(rec, tenant, execution_id, step_key, epoch, self.timing))

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
        self._run(
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

        self._run(
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

    def accept_events(
        self,
        batch: Sequence[tuple[InboundEventRecord, Sequence[eventlog.TriggerStart]]],
        committed: Callable[[list[eventlog.Accepted]], None] | None = None,
    ) -> list[eventlog.Accepted]:
        """Append events to their tenants' logs and start their triggers' executions, in one transaction.

        One transaction for the whole batch (the bridge hands over the messages it pulled
        together): each event is accepted once per id (a second copy in the same batch is a
        duplicate), and a duplicate starts nothing. An event no step can wait for (it has no
        correlation key) is routed by this commit; one with a key stays unrouted until the
        router offered it to the waiters. A start whose workflow is gone or whose mapped input
        is invalid is logged and left out, as retrying would fail the same way; one over the
        tenant's quota of active executions is skipped and counted on its trigger.

        ``committed`` is called once the transaction committed, before its steps are
        dispatched (the bridge acks there: a lost dispatch is re-sent by the reconciler).
        """
        wanted: dict[str, int] = {}
        for event, starts in batch:
            wanted[event.tenant] = wanted.get(event.tenant, 0) + len(starts)
        budgets = self._start_budgets(wanted)

        def use_case(rec: Recorder) -> list[eventlog.Accepted]:
            rec.start_budget = dict(budgets)
            stored = eventlog.accept_many(rec.tx, [event for event, _ in batch])
            fresh = [pair for accepted, pair in zip(stored, batch, strict=True) if not accepted.duplicate]
            found: dict[str, ExecutionRecord] = {}
            for tenant in {event.tenant for event, _ in fresh}:  # every start's key, in one read
                keys = [start.idempotency_key for event, starts in fresh if event.tenant == tenant for start in starts]
                found.update(rec.tx.find_executions_by_keys(tenant, keys) if keys else {})
            for event, starts in fresh:
                self._start_all(rec, event.tenant, [s for s in starts if s.idempotency_key not in found])
            return stored

        result, effects = self._commit(use_case)
        if committed is not None:
            committed(result)
        self.perform(effects)
        return result

    def start_for_event(
        self, event: InboundEventRecord, starts: Sequence[eventlog.TriggerStart]
    ) -> list[ExecutionRecord]:
        """Start (or find, by their keys) the executions of an event's triggers, in one transaction."""
        if not starts:
            return []
        budgets = self._start_budgets({event.tenant: len(starts)})

        def use_case(rec: Recorder) -> list[ExecutionRecord]:
            rec.start_budget = dict(budgets)
            return self._start_all(rec, event.tenant, starts)

        return self._run(use_case)

    def _start_budgets(self, wanted: dict[str, int]) -> dict[str, int]:
        """How many executions each tenant may still start: its quota less its active executions.

        ``wanted`` is how many starts each tenant's use case may make. Counted before the
        transaction, as for API starts (``enforce_quota``): a bound, not an exact count under
        concurrency (see :class:`engine.quota.ActiveCounts`).
        """
        return {tenant: self.active_counts.budget(tenant, count) for tenant, count in wanted.items() if count > 0}

    def _start_all(self, rec: Recorder, tenant: str, starts: Sequence[eventlog.TriggerStart]) -> list[ExecutionRecord]:
        started = []
        for start in starts:
            try:
                started.append(
                    self._start_for_trigger(
                        rec, tenant, start.workflow, start.input, start.idempotency_key, start.trigger_id
                    )
                )
            except QuotaExceeded as exc:
                self._count_quota_skip(rec, tenant, start.trigger_id, start.idempotency_key, exc)
            except (NotFound, InputInvalid, PayloadTooLarge) as exc:
                # Checked before the start writes anything, so the rest of the transaction stands.
                log.warning("an event trigger cannot start", trigger_id=start.trigger_id, error=exc.message)
        return started

    @staticmethod
    def _count_quota_skip(rec: Recorder, tenant: str, trigger_id: str, key: str, exc: QuotaExceeded) -> None:
        """Count a start refused by the tenant's quota on its trigger (``skipped``, ``last_error``)."""
        log.warning("a trigger start is over the tenant's quota; skipped", trigger_id=trigger_id, key=key)
        trigger = rec.tx.get_trigger(tenant, trigger_id)
        if trigger is not None:
            trigger.skipped += 1
            trigger.last_error = f"{key}: skipped: {exc.message}"
            rec.tx.put_trigger(trigger)

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
        return self._run(lambda rec: step_cases.deliver_event(rec, self.workflows, waiter, delivery))

    def scan_events(self, waiter: WaiterRecord) -> bool:
        """Offer a new waiter the events of its route accepted since its execution started.

        Runs after the transaction that registered the waiter committed, so together with
        the router (which looks waiters up after committing an event) no event is missed.
        """
        for event in self.store.list_inbound_events(waiter.tenant, waiter.route, since=waiter.since):
            if self.deliver_event(waiter, event):
                return True
        self._run(
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
        self._run(
            lambda rec: step_cases.fail(
                rec, self.workflows, tenant, execution_id, step_key, fence, error, retryable, self.timing
            )
        )

    # --- schedules (called by beat) ---------------------------------------------------------

    def fire_trigger(self, tenant: str, trigger_id: str) -> FireReport:
        """Fire what one schedule trigger owes now, in one transaction (nothing if not due).

        Its starts count toward the tenant's quota of active executions: a fire over it is
        counted as skipped on the trigger, the reason in ``last_error``.
        """
        budgets = self._start_budgets({tenant: 1})

        def use_case(rec: Recorder) -> FireReport:
            rec.start_budget = dict(budgets)
            return self.schedules.fire(rec, tenant, trigger_id)

        return self._run(use_case)

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
        """One pass: expired leases, lost messages, due timers and passed deadlines, in that order.

        Bounded in work (``reconcile_batch`` records of each kind) and in time
        (``reconcile_pass_seconds``, checked between items, as is ``should_stop``): whatever is
        left is due still and the next pass finds it. Callers must not overlap passes (see
        ``docs/architecture.md``); a second, uncoordinated reconciler is harmless but wasteful.
        """
        now = self.clock.now()
        batch = self.settings.reconcile_batch
        job = _Pass(self, should_stop)
        expired = self.store.due_steps(StepStatus.RUNNING, now, batch)
        job.run("expired_leases", [self._transact(self._expire(step)) for step in expired])
        if not job.over():
            self._resend_lost(job, now)
        if not job.over():
            timers = [
                *self.store.due_steps(StepStatus.RETRY_WAIT, now, batch),
                *self.store.due_steps(StepStatus.WAITING, now, batch),
            ]
            scans = [step for step in timers if (step.wait or {}).get("scan_pending")]
            job.run("timers", [self._transact(self._wake(step)) for step in timers if step not in scans])
            job.run("scans", [self._scan(step) for step in scans])
        if not job.over():
            overdue = self.store.overdue_executions(now, batch)
            job.run("timed_out", [self._transact(self._time_out(execution)) for execution in overdue])
        if not job.over():
            job.counts["routed_events"] += EventRouter(self).route_due(now - self.settings.event_route_after, batch)
        report = replace(job.report(), trimmed_events=self._trim_event_log(job, now))
        self.telemetry.reconciled({**job.counts, "failed": job.failed})
        return report

    def _trim_event_log(self, job: _Pass, now: float) -> int:
        """Delete routed events past their retention, a batch at a time while the pass has time.

        Batches go on until one comes back short, so trimming keeps up with events arriving
        faster than one batch per pass; what is left is trimmed by the next pass.
        """
        batch, before, trimmed = self.settings.reconcile_batch, now - self.settings.event_retention_seconds, 0
        while not job.over():
            try:
                deleted = self.store.trim_inbound_events(before, batch)
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
        batch = self.settings.reconcile_batch
        stale_before = now - self.settings.redispatch_after
        held_since = now - self.settings.redispatch_held_after
        lost: list[StepRecord] = []
        while len(lost) < batch and not job.over():
            page = self.store.due_steps(StepStatus.QUEUED, stale_before, batch, after=self._lost_cursor)
            held = self.ledger.held(page, held_since) if self.ledger is not None else [False] * len(page)
            lost += [step for step, is_held in zip(page, held, strict=True) if not is_held]
            job.held += sum(held)
            self._lost_cursor = page[-1] if len(page) == batch else None
            if self._lost_cursor is None:
                break  # the end of the list: the next pass starts from the oldest again
        job.run("redispatched", [self._transact(self._redispatch(step, stale_before)) for step in lost])
        if job.over():
            self._lost_cursor = None  # some found were not sent: look from the oldest again

    def _transact(self, use_case: Callable[[Recorder], object]) -> Callable[[], object]:
        return lambda: self._run(use_case)

    def _scan(self, step: StepRecord) -> Callable[[], None]:
        waiter = _waiter_of(step)

        def scan() -> None:  # counted whether or not it found an event
            self.scan_events(waiter)

        return scan

    def _expire(self, step: StepRecord) -> Callable[[Recorder], None]:
        return lambda rec: step_cases.expire_lease(rec, self.workflows, step.tenant, step.execution_id, step.key)

    def _redispatch(self, step: StepRecord, stale_before: float) -> Callable[[Recorder], bool]:
        return lambda rec: step_cases.redispatch(rec, step.tenant, step.execution_id, step.key, stale_before)

    def _time_out(self, execution: ExecutionRecord) -> Callable[[Recorder], None]:
        return lambda rec: control.time_out(rec, self.workflows, execution.tenant, execution.id)

    def _wake(self, step: StepRecord) -> Callable[[Recorder], None]:
        return lambda rec: step_cases.wake_timer(rec, self.workflows, step.tenant, step.execution_id, step.key)

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


def _waiter_of(step: StepRecord) -> WaiterRecord:
    wait = step.wait or {}
    return WaiterRecord(step.tenant, step.execution_id, step.key, str(wait["route"]), float(wait["since"]))
