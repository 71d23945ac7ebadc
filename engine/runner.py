"""Run one step end to end: claim, render, run the handler with a lease heartbeat, record.

The handler runs outside any transaction. While it runs, the runner's lease keeper extends
the lease; if the lease is lost (the step was cancelled or taken over), the context reports
``cancelled()`` and the late result is refused by fencing.

A message the broker delivers for the first time, for a step's first attempt, runs before
its claim (``Service.peek``): the outcome's transaction claims the step, so a short step
costs one transaction instead of two. If it is still running after
``unclaimed_run_seconds`` (or heartbeats), the lease keeper claims it like any other step.
"""

from __future__ import annotations

import asyncio
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from structlog.contextvars import bound_contextvars

from engine import steptypes
from engine.ai import BudgetExceeded, usage_total
from engine.errors import ConveyorError, LeaseLost, PayloadInvalid, PayloadTooLarge, StepFailure, StoreUnavailable
from engine.eventlog import route_of
from engine.events import unclaimed_running_event
from engine.expressions import compile_expression, render
from engine.orchestration import planner
from engine.orchestration.steps import Claimed, EventWait, Fence, Unclaimed
from engine.ports import StepAttempt
from engine.records import Deferred, StepRecord
from engine.service import Service
from engine.steplogs import StepLogs
from engine.steptypes.base import StartChild, StepConfig, StepContext, StepOutcome, StepPorts, Succeeded, Wait

log = structlog.get_logger("conveyor.runner")

#: Steps one message may run after its own before the next goes through the broker again.
MAX_FOLLOWED_STEPS = 100
#: Tries to record an attempt's outcome while the store is unavailable (see ``StepRunner._record``).
RECORD_ATTEMPTS = 5


def record_backoff(failed: int) -> float:
    """Seconds to wait after the ``failed``-th try to record an outcome: 0.1 s, doubling, at most 2 s."""
    return float(min(0.1 * 2 ** (failed - 1), 2.0))


@dataclass(frozen=True)
class RunReport:
    """What happened to one delivery of a step message (for logs and tests)."""

    outcome: str
    step_key: str
    #: Steps run after this one, each claimed by the completion of the one before.
    followed: int = 0


class Lease:
    """One running step's lease as seen by its worker: ``lost`` is set once fencing refused it.

    An ``unclaimed`` lease belongs to a step run before its claim; the keeper claims it if
    it runs long. :meth:`fence` ends the lease's life with the keeper.
    """

    def __init__(self, step: StepRecord, now: float, *, unclaimed: bool = False) -> None:
        self.step = step
        self.last_beat = now
        self.last_check = now
        self.lost = threading.Event()
        self.unclaimed = unclaimed
        #: An unclaimed run is announced on the live stream once (see ``ANNOUNCE_RUNNING_AFTER``).
        self.announced = not unclaimed
        self.started = now
        self.closed = False
        self._on_lost: Callable[[], object] | None = None
        # Held while the keeper writes, so the outcome is never fenced with a stale epoch.
        self.lock = threading.Lock()

    def current_fence(self) -> Fence:
        return Unclaimed(self.step.lease_epoch, self.step.started_at) if self.unclaimed else self.step.lease_epoch

    def fence(self) -> Fence:
        """The fence to record the outcome with; from now on the keeper leaves this lease alone."""
        with self.lock:
            self.closed = True
            return self.current_fence()

    def lose(self) -> None:
        """The step is no longer this worker's (cancelled, timed out, taken over): stop running it."""
        self.lost.set()
        if self._on_lost is not None:
            self._on_lost()

    def on_lost(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (from the keeper's thread) when the lease is lost; at once if it is."""
        self._on_lost = callback
        if self.lost.is_set():
            callback()


#: Seconds an unclaimed run lasts before watchers are told it runs (a live-only
#: ``step.running``); a shorter step costs nothing extra.
ANNOUNCE_RUNNING_AFTER = 0.25


class LeaseKeeper:
    """One thread per runner that extends the lease of every step running in this process.

    A step that finishes within a third of its lease never costs a heartbeat write; a
    long one is extended every third of the lease until it ends or the lease is lost. An
    unclaimed step is claimed once it has run ``unclaimed_run_seconds``. A step running
    longer than ``cancel_check_seconds`` has its record read that often, so a cancel, a
    deadline or a takeover stops it within about that time, not at its next heartbeat.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self._leases: dict[int, Lease] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, step: StepRecord, *, unclaimed: bool = False) -> Iterator[Lease]:
        lease = Lease(step, time.monotonic(), unclaimed=unclaimed)
        with self._lock:
            self._leases[id(lease)] = lease
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="conveyor-lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield lease
        finally:
            with self._lock:
                del self._leases[id(lease)]

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every step running here to end; True if none is left."""
        deadline = time.monotonic() + timeout
        while self._leases and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._leases

    def abandon(self) -> int:
        """Stop waiting for every step running here, as if each lease were lost; how many there were.

        For a process about to exit: the steps' records are left as a crash would leave them
        (the reconciler re-queues a RUNNING one when its lease expires), and their sync
        functions are left to their daemon threads.
        """
        with self._lock:
            leases = list(self._leases.values())
        for lease in leases:
            lease.lose()
        return len(leases)

    def beat(self, lease: Lease) -> None:
        """Extend the lease, or claim the step of an unclaimed one; the lease is lost if refused."""
        with lease.lock:
            if lease.closed:
                return
            step = lease.step
            lease.last_beat = lease.last_check = time.monotonic()
            if lease.unclaimed:
                claimed = self.service.claim(step.tenant, step.execution_id, step.key, started_at=step.started_at)
                if claimed is None:
                    lease.lose()  # taken, cancelled or paused meanwhile: its outcome is not wanted
                else:
                    lease.step, lease.unclaimed = claimed.step, False
                return
            try:
                self.service.heartbeat(step.tenant, step.execution_id, step.key, step.lease_epoch)
            except LeaseLost:
                lease.lose()

    def announce(self, lease: Lease) -> None:
        """Tell watchers an unclaimed step runs (live stream only; no store write)."""
        with lease.lock:
            if lease.closed or not lease.unclaimed:
                lease.announced = True
                return
            lease.announced = True
            self.service.events.publish([unclaimed_running_event(lease.step, self.service.clock.now())])

    def check(self, lease: Lease) -> None:
        """Read the step (no transaction, no write); the lease is lost if it is no longer ours."""
        with lease.lock:
            if lease.closed:
                return
            step = lease.step
            lease.last_check = time.monotonic()
            if not self.service.still_owns(step.tenant, step.execution_id, step.key, lease.current_fence()):
                lease.lose()

    def _loop(self) -> None:
        settings = self.service.settings
        interval = settings.lease_seconds / 3
        claim_after = settings.unclaimed_run_seconds
        check_every = settings.cancel_check_seconds
        tick = min(interval / 4, claim_after / 2 or 1.0, check_every / 2 or 1.0, ANNOUNCE_RUNNING_AFTER)
        while True:
            time.sleep(tick)
            with self._lock:
                running = [lease for lease in self._leases.values() if not lease.lost.is_set()]
            now = time.monotonic()
            for lease in running:
                try:
                    if not lease.announced and now - lease.started >= ANNOUNCE_RUNNING_AFTER:
                        self.announce(lease)
                    if now - lease.last_beat >= (claim_after if lease.unclaimed else interval):
                        self.beat(lease)
                    elif check_every and now - lease.last_check >= check_every:
                        self.check(lease)
                except ConveyorError as exc:
                    log.warning("lease keeping failed", step_key=lease.step.key, error=exc.message)


def _message(exc: BaseException) -> str:
    """``str(exc)``, or what went wrong computing it: user code may define a ``__str__`` that raises."""
    if isinstance(exc, ConveyorError):
        return exc.message
    try:
        return str(exc)
    except Exception as broken:  # any failure of user code is reported, not raised
        return f"<str() of the {type(exc).__name__} raised {type(broken).__name__}>"


#: Traceback frames under these folders are Conveyor's engine or Python's own, not step code.
INTERNAL_PATHS = (
    str(Path(__file__).resolve().parent),
    sysconfig.get_paths()["stdlib"],
    str(Path(sysconfig.get_paths()["stdlib"]).resolve()),
)


def _error(exc: BaseException) -> dict[str, Any]:
    """The recorded error: type, message and, when the step's own code raised it, a traceback.

    An error Conveyor raised on purpose with no step code on the stack (a ``fail`` step, an
    unknown function, an invalid config, a step timeout, an output that is not JSON) has no
    traceback worth showing: its type and message say everything.
    """
    error_type = exc.error_type if isinstance(exc, StepFailure) else type(exc).__name__
    message = _message(exc) or error_type
    shown = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if not isinstance(exc, ConveyorError) or any(not frame.filename.startswith(INTERNAL_PATHS) for frame in frames):
        shown = "".join(_trimmed(traceback.TracebackException.from_exception(exc, limit=-8)).format())[-4000:]
    error: dict[str, Any] = {"type": error_type, "message": message, "traceback": shown}
    if isinstance(exc, BudgetExceeded) and exc.usage is not None:
        error["usage"] = exc.usage.as_dict()  # spent all the same: the execution's totals count it
    return error


def _short_path(filename: str) -> str:
    """A frame's file without the host's directories (what an operator needs, no more)."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    path = Path(filename)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return path.name
    return filename


def _trimmed(found: traceback.TracebackException) -> traceback.TracebackException:
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [found]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        for frame in current.stack:
            _ = frame.line  # read the source line before the path it is read from changes
            frame.filename = _short_path(frame.filename)
        pending += [current.__cause__, current.__context__]
    return found


def _event_wait(wait: Wait) -> EventWait | None:
    if wait.event is None:
        return None
    return EventWait(wait.event.type, wait.event.correlation_key, route_of(wait.event.type, wait.event.correlation_key))


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StepFailure):
        return exc.retryable
    return not isinstance(exc, ConveyorError)


class StepRunner:
    """Executes step messages against a :class:`Service`."""

    def __init__(
        self, service: Service, services: Mapping[str, Any] | None = None, *, ports: StepPorts | None = None
    ) -> None:
        self.service = service
        self.services = dict(services or {})
        self.ports = ports or StepPorts()
        self.leases = LeaseKeeper(service)
        self._loops = threading.local()
        #: Captures what each attempt logs and prints (None: not captured, see engine/steplogs).
        self.step_logs = (
            StepLogs(service.settings, service.step_logs, service.events)
            if service.step_logs is not None and service.settings.step_logs_enabled
            else None
        )

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        # One event loop per worker thread, reused across steps: creating a loop per step
        # costs more than many steps do. (Not asyncio.Runner: it checks and swaps the SIGINT
        # handler on every run, a good part of a short step's CPU.)
        loop: asyncio.AbstractEventLoop | None = getattr(self._loops, "loop", None)
        if loop is None:
            loop = self._loops.loop = asyncio.new_event_loop()
        return loop

    def run(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        *,
        first_delivery: bool = False,
        epoch: int | None = None,
    ) -> RunReport:
        """Run one step message, then each step its completion claimed for this worker.

        A chain of steps on one queue thus runs without a claim transaction or a broker round
        trip per step; after ``MAX_FOLLOWED_STEPS`` the next one goes through the broker again,
        so one message never holds a worker for an unbounded chain.

        ``first_delivery`` says the broker has not delivered this message before: the step
        may then run before its claim (see the module docstring). A redelivered message
        (its worker died) is claimed first, so a step that kills workers has its attempts
        counted and ends failed.

        ``epoch`` is the one the message was sent with (:attr:`~engine.ports.Dispatch.epoch`),
        when it says: a stale copy of an earlier message is then dropped, not sent again.
        """
        unclaimed = None
        if first_delivery and self.service.settings.unclaimed_run_seconds > 0:
            unclaimed = self.service.peek(tenant, execution_id, step_key)
        claimed = unclaimed or self.service.claim(tenant, execution_id, step_key, sent_epoch=epoch)
        if claimed is None:
            return RunReport("ignored", step_key)
        report, follower = self._observed_attempt(claimed, follow=True, unclaimed=unclaimed is not None)
        followed = 0
        while follower is not None:
            followed += 1
            _, follower = self._observed_attempt(follower, follow=followed < MAX_FOLLOWED_STEPS, followed=True)
        return replace(report, followed=followed)

    def _observed_attempt(
        self, claimed: Claimed, *, follow: bool, unclaimed: bool = False, followed: bool = False
    ) -> tuple[RunReport, Claimed | None]:
        """:meth:`_attempt`, reported to the service's telemetry (workflow, step type, outcome, timings)."""
        started = time.monotonic()
        step = claimed.step
        started_at = self.service.clock.now()
        queue_wait = started_at - step.dispatched_at if step.dispatched_at is not None else None
        # Every log line of the attempt, stdlib records of the step's own code included, names it.
        with bound_contextvars(tenant=step.tenant, execution_id=step.execution_id, step_key=step.key):
            report, follower = self._attempt(claimed, follow=follow, unclaimed=unclaimed)
        self.service.telemetry.step_attempt(
            StepAttempt(
                workflow=claimed.execution.workflow,
                step_type=claimed.compiled.step(claimed.step.step_id).type,
                outcome=report.outcome,
                seconds=time.monotonic() - started,
                queue_wait=queue_wait,
                attempt=step.attempt,
                tenant=step.tenant,
                execution_id=step.execution_id,
                step_key=step.key,
                started_at=started_at,
                followed=followed,
            )
        )
        return report, follower

    def _attempt(self, claimed: Claimed, *, follow: bool, unclaimed: bool = False) -> tuple[RunReport, Claimed | None]:
        """Run one attempt and record its outcome; a follower claimed on completion, if any."""
        step = claimed.step
        tenant, execution_id, step_key = step.tenant, step.execution_id, step.key
        bound = log.bind(execution_id=execution_id, step_key=step_key, attempt=step.attempt)
        with self.leases.hold(step, unclaimed=unclaimed) as lease:
            try:
                with self.step_logs.attempt(step) if self.step_logs is not None else nullcontext():
                    outcome = self._event_loop().run_until_complete(self._handle(claimed, lease))
            except LeaseLost:
                return RunReport("lease-lost", step_key), None
            except asyncio.CancelledError:
                if not lease.lost.is_set():
                    raise
                return RunReport("lease-lost", step_key), None  # cancelled, timed out or taken over meanwhile
            except Exception as exc:  # user code may raise anything: it is recorded, never lost
                error, retryable, fence = _error(exc), _retryable(exc), lease.fence()
                bound.info("step attempt failed", error_type=error["type"], error=error["message"])
                return self._record(
                    lambda: self.service.fail(tenant, execution_id, step_key, fence, error, retryable=retryable),
                    "failed",
                    step_key,
                )
            fence = lease.fence()
        if isinstance(outcome, Wait):
            wait = outcome
            return self._record(
                lambda: self.service.park(
                    tenant,
                    execution_id,
                    step_key,
                    fence,
                    until=wait.until,
                    on_wake=wait.on_wake,
                    match=wait.match,
                    event=_event_wait(wait),
                    interrupt=dict(wait.interrupt) if wait.interrupt is not None else None,
                    kind=wait.kind,
                    details=dict(wait.details),
                ),
                "waiting",
                step_key,
            )
        if isinstance(outcome, StartChild):
            child = outcome
            return self._record(
                lambda: self.service.start_child(
                    tenant,
                    execution_id,
                    step_key,
                    fence,
                    workflow=child.workflow,
                    input=child.input,
                    version=child.version,
                ),
                "waiting",
                step_key,
            )
        output, event = outcome.output, dict(outcome.event) if outcome.event else None
        return self._record(
            lambda: self.service.complete(tenant, execution_id, step_key, fence, output, follow=follow, event=event),
            "succeeded",
            step_key,
        )

    def _record(
        self, action: Callable[[], Claimed | None], outcome: str, step_key: str
    ) -> tuple[RunReport, Claimed | None]:
        """Write a finished attempt's outcome, retrying while the store is briefly unavailable.

        Retrying is safe because the write is fenced: if an earlier try did commit, the next
        one gets ``LeaseLost`` and nothing is recorded twice. The lease outlasts the retries.
        (A follower that earlier try claimed is then left to its lease, which the reconciler
        expires.)
        """
        # A plain loop, not tenacity: this runs once per step, and tenacity's machinery cost
        # about 30 µs of CPU per call, a few percent of a short step.
        for number in range(1, RECORD_ATTEMPTS + 1):
            try:
                follower = action()
            except LeaseLost:
                return RunReport("lease-lost", step_key), None
            except StoreUnavailable:
                if number == RECORD_ATTEMPTS:
                    raise
                time.sleep(record_backoff(number))
                continue
            return RunReport(outcome, step_key), follower
        raise AssertionError("unreachable")

    async def _handle(self, claimed: Claimed, lease: Lease) -> StepOutcome:
        step, execution, compiled = claimed.step, claimed.execution, claimed.compiled
        definition = compiled.step(step.step_id)
        step_type = steptypes.get(definition.type)
        if step_type is None:
            raise StepFailure(f"unknown step type {definition.type!r}", retryable=False)
        variables = planner.variables(execution, claimed.referenced, item=step.item, index=step.index)
        try:
            config: StepConfig = step_type.Config.model_validate(render(definition.config, variables))
        except ValidationError as exc:
            message = f"step configuration is invalid: {exc}"
            raise StepFailure(message, retryable=False, error_type="ConfigInvalid") from None
        ctx = StepContext(
            tenant=step.tenant,
            execution_id=step.execution_id,
            step_key=step.key,
            step_id=step.step_id,
            attempt=step.attempt,
            input=Deferred(lambda: execution.input),
            item=step.item,
            index=step.index,
            now=self.service.clock.now,
            evaluate=lambda source: compile_expression(source).evaluate(variables),
            render=lambda template: render(template, variables),
            heartbeat=lambda: self.leases.beat(lease),
            lease_epoch=lambda: None if lease.unclaimed else lease.step.lease_epoch,
            cancelled=lease.lost.is_set,
            services=self.services,
            ports=self.ports,
            models=compiled.definition.models,
            prompts=compiled.definition.prompts,
            workflow=compiled.name,
            execution_budget=compiled.definition.budget,
            execution_spent=usage_total(execution.usage, without=step.key),
            resume=(step.wait or {}).get("answer"),
        )
        # A lost lease (the step was cancelled, timed out or taken over) stops the wait for
        # the handler at once; a sync function's daemon thread is abandoned, not joined.
        handling, loop = asyncio.current_task(), asyncio.get_running_loop()
        if handling is not None:
            lease.on_lost(lambda: loop.call_soon_threadsafe(handling.cancel))
        try:
            async with asyncio.timeout(definition.timeout) as deadline:
                outcome = await step_type.run(ctx, config)
        except TimeoutError:
            if not deadline.expired():
                raise  # the step's own TimeoutError (socket.timeout, ...): recorded as itself
            raise StepFailure(f"step timed out after {definition.timeout:g}s", error_type="StepTimeout") from None
        if isinstance(outcome, Succeeded):
            # Checked here, not at commit, so an output that cannot be stored fails this
            # attempt (retried per the step's policy) instead of escaping the completion
            # transaction and leaving the step RUNNING until its lease expires.
            _check_output(self.service, outcome.output, step.key)
        return outcome


def _check_output(service: Service, output: Any, step_key: str) -> None:
    try:
        service.check_payload(output, "output")
    except PayloadInvalid as exc:
        raise StepFailure(exc.message, error_type="OutputNotSerializable") from None
    except PayloadTooLarge as exc:
        raise StepFailure(exc.message, retryable=False, error_type="PayloadTooLarge") from None
