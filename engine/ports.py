"""Ports: the interfaces the core needs from the outside world.

Adapters in :mod:`engine.adapters` implement them. The core never imports an adapter.

Tenancy is enforced here: every read and write names its tenant, and adapters keep each
tenant's records apart (SQLite: tenant in every primary key; Firestore: one subtree per
tenant), so a record of tenant A cannot be read with tenant B's name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from engine.records import (
    ApiKeyRecord,
    DeadLetterRecord,
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    ItemChunkRecord,
    Page,
    SignalRecord,
    StepLogRecord,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.search import ExecutionFilter
from engine.states import ExecutionStatus, StepStatus

if TYPE_CHECKING:
    from engine.ai import AgentOutcome, AgentRequest, Choice, ChoiceRequest
    from engine.prompts import PromptRecord
    from engine.steptypes.base import StepContext

T = TypeVar("T")

#: The timestamp field that decides when a step in each status is due for the reconciler.
DUE_FIELD: dict[StepStatus, str] = {
    StepStatus.QUEUED: "dispatched_at",
    StepStatus.RUNNING: "lease_until",
    StepStatus.RETRY_WAIT: "wake_at",
    StepStatus.WAITING: "wake_at",
}


class Reads(Protocol):
    """The reads a use case makes: inside a :class:`Transaction`, or alone through ``Store.read``."""

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None: ...

    def find_execution_by_key(self, tenant: str, idempotency_key: str) -> ExecutionRecord | None: ...

    def find_executions_by_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, ExecutionRecord]:
        """``find_execution_by_key`` for several keys (absent ones left out), in one round trip or two."""
        ...

    def get_steps(self, tenant: str, execution_id: str, keys: Sequence[str]) -> dict[str, StepRecord]:
        """The step records among ``keys`` that exist, by key."""
        ...

    def get_execution_and_steps(
        self, tenant: str, execution_id: str, keys: Sequence[str]
    ) -> tuple[ExecutionRecord | None, dict[str, StepRecord]]:
        """The header and the existing steps among ``keys``, read in one round trip.

        Same answers as ``get_execution`` and ``get_steps`` (buffered writes included).
        """
        ...

    def latest_workflow_version(self, tenant: str, name: str) -> WorkflowVersionRecord | None: ...

    def get_item_chunk(self, tenant: str, execution_id: str, step_id: str, chunk: int) -> ItemChunkRecord | None:
        """One slice of a foreach's list (see :class:`ItemChunkRecord`), or None if there is none."""
        ...

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None: ...


class Transaction(Reads, Protocol):
    """Reads and buffered writes that commit atomically.

    Writes are buffered until commit; a read of a record written earlier in the same
    transaction returns the written version. ``Store.atomic`` may run the function
    again on contention, so it must not have side effects outside the transaction.
    """

    def put_workflow_version(self, record: WorkflowVersionRecord) -> None:
        """Create a version; committing raises ``AlreadyExists`` if that number is taken."""
        ...

    def put_execution(self, record: ExecutionRecord) -> None:
        """Create or replace the header; a new ``idempotency_key`` is indexed with it."""
        ...

    def put_step(self, record: StepRecord) -> None: ...

    def put_trigger(self, record: TriggerRecord) -> None:
        """Create or replace a trigger (firing a schedule and ending its executions update it)."""
        ...

    def put_item_chunk(self, record: ItemChunkRecord) -> None:
        """Create or replace one slice of a foreach's list."""
        ...

    def add_event(self, event: EventRecord) -> None:
        """Append to the execution's history; an event id already present is not written twice."""
        ...

    # the external event log, waiters and early signals

    def get_inbound_event(self, tenant: str, event_id: str) -> InboundEventRecord | None:
        """An accepted external event of the tenant's event log, by id."""
        ...

    def get_inbound_events(self, tenant: str, event_ids: Sequence[str]) -> dict[str, InboundEventRecord]:
        """The accepted events among ``event_ids`` (by id; absent ids are left out), in one read."""
        ...

    def put_inbound_event(self, record: InboundEventRecord) -> None:
        """Create or replace an event of the tenant's event log."""
        ...

    def put_waiter(self, record: WaiterRecord) -> None:
        """Register a step waiting for events on ``record.route`` (one waiter per step)."""
        ...

    def delete_waiter(self, tenant: str, execution_id: str, step_key: str) -> None:
        """Remove the step's waiter, if it has one."""
        ...

    def get_signal(self, tenant: str, execution_id: str, step_key: str) -> SignalRecord | None:
        """The signal kept for a step that was not WAITING when it arrived."""
        ...

    def put_signal(self, record: SignalRecord) -> None: ...

    def delete_signal(self, tenant: str, execution_id: str, step_key: str) -> None: ...


class Store(Protocol):
    """The persistence port: one transaction entry point plus read-only listings."""

    def atomic(self, fn: Callable[[Transaction], T], *, durable: bool = True) -> T:
        """Run ``fn`` in a serializable transaction and commit; retried on contention.

        The commit survives a power loss once this returns. With ``durable=False`` it
        survives a crash of the process but may not yet survive a power loss: only for the
        engine's own progress (a claim, a step's outcome), which recovery redoes like that of a
        crashed worker, never for a change someone outside is told about. :meth:`sync` makes
        it durable later.
        """
        ...

    def sync(self) -> None:
        """Make every transaction committed so far survive a power loss."""
        ...

    def read(self, fn: Callable[[Reads], T]) -> T:
        """Run ``fn`` over committed records, outside any transaction: it takes no locks.

        Records read in one call of a ``Reads`` method are consistent with each other;
        records read by two calls may not be. For decisions a transaction checks again
        (a worker reading a step before it runs it), never for writes.
        """
        ...

    # workflows
    def get_workflow_version(
        self, tenant: str, name: str, version: int | None = None
    ) -> WorkflowVersionRecord | None:
        """A given version, or the latest one when ``version`` is None."""
        ...

    def list_workflows(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        """Latest version of each workflow, ordered by name."""
        ...

    def list_workflow_versions(
        self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Versions of one workflow, newest first."""
        ...

    def set_workflow_archived(self, tenant: str, name: str, archived: bool) -> None:
        """Archive or restore every version of a workflow; ``NotFound`` if it has none."""
        ...

    # executions
    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None: ...

    def list_executions(
        self, tenant: str, where: ExecutionFilter | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Executions matching every filter of ``where`` (all when None), newest first.

        Ordered by ``created_at`` then id, both descending; a cursor continues the same
        filtered listing.
        """
        ...

    def count_executions(self, tenant: str, where: ExecutionFilter | None = None) -> dict[ExecutionStatus, int]:
        """How many executions match ``where`` in each status: every status is a key (0 if none).

        ``where.status`` must be None (``InvalidFilter`` otherwise): the counts are per status.
        """
        ...

    def backfill_search_fields(self) -> int:
        """Write the derived search fields of executions stored before they existed (schema 2).

        Idempotent; returns how many executions it updated. Migration 2 runs it.
        """
        ...

    def count_active_executions(self, tenant: str) -> int: ...

    def mark_once(self, tenant: str, execution_id: str, name: str) -> bool:
        """Record the marker ``name`` on an execution; whether this call was the one to record it.

        One write, outside any transaction: it elects one of several racing callers (e.g. who
        finishes a foreach) without the lock contention a transaction would add.
        """
        ...

    def count_active_items(self, tenant: str, execution_id: str, step_id: str) -> int:
        """How many foreach items of ``step_id`` are active (``STEP_ACTIVE``).

        Items are the records keyed ``<step_id>[<index>]`` (non-null ``index``); the foreach
        parent (keyed ``step_id``, no index, itself active) is never counted. Read outside any
        transaction, so the answer may already be stale when it arrives.
        """
        ...

    def list_steps(self, tenant: str, execution_id: str) -> list[StepRecord]: ...

    def list_steps_many(self, tenant: str, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """``list_steps`` of several executions in one call (the API's batched loaders use it).

        Every requested id is a key of the result; an unknown execution maps to ``[]``.
        """
        ...

    def list_events(
        self, tenant: str, execution_id: str, *, after: str | None = None, limit: int = 500
    ) -> Page:
        """History in order of event id, starting after the event id ``after``."""
        ...

    # reconciler scans; these cross tenants on purpose and are used only by Beat
    def due_steps(
        self, status: StepStatus, before: float, limit: int = 200, after: StepRecord | None = None
    ) -> list[StepRecord]:
        """Steps in ``status`` whose ``DUE_FIELD[status]`` is set and not after ``before``.

        Ordered by that field (ties in an order of the store's choosing, the same every time);
        with ``after``, only the steps after that record in this order: pages of a long list.
        """
        ...

    def overdue_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        """Active executions whose deadline is not after ``before``."""
        ...

    # retention (see engine/retention.py)
    def expired_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        """Terminal executions whose ``expires_at`` is not after ``before``, soonest first (all tenants)."""
        ...

    def backfill_expiry(self, retention: Callable[[ExecutionRecord], float | None]) -> int:
        """Give terminal executions that have no ``expires_at`` (they ended before retention
        existed) ``finished_at + retention(execution)``; ``None`` leaves one without. Every
        tenant; idempotent; how many it updated. Migration 3 runs it."""
        ...

    def purge_execution(self, tenant: str, execution_id: str, limit: int = 200) -> bool:
        """Delete up to ``limit`` records of a terminal execution; ``True`` once none is left.

        Its steps (with their out-of-line payloads), history events, foreach item chunks,
        markers, signals and waiters go first, a bounded batch per call, each batch committed
        on its own; once none is left, the header goes with its idempotency key, stored input
        and search side rows. An unknown execution is done at once. Refused with
        ``ExecutionActive`` (nothing deleted) while the execution is running or paused.

        Resumable: the header goes last, so what a crash leaves is still reached from it, and
        the next call (the execution still expired) deletes the rest.
        """
        ...

    # triggers
    def put_trigger(self, record: TriggerRecord) -> None: ...

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None: ...

    def list_triggers(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page: ...

    def delete_trigger(self, tenant: str, trigger_id: str) -> bool: ...

    def due_triggers(self, before: float, limit: int = 200) -> list[TriggerRecord]:
        """Enabled triggers whose ``next_fire_at`` is not after ``before`` (all tenants)."""
        ...

    # the external event log (see engine/eventlog.py)
    def list_inbound_events(
        self, tenant: str, route: str, *, since: float, limit: int = 100
    ) -> list[InboundEventRecord]:
        """Events on ``route`` accepted at or after ``since``, oldest first (ties by id)."""
        ...

    def list_waiters(self, tenant: str, route: str, limit: int = 500) -> list[WaiterRecord]:
        """Steps registered as waiting for events on ``route``."""
        ...

    def due_inbound_events(self, before: float, limit: int = 200) -> list[InboundEventRecord]:
        """Events of every tenant not routed yet, accepted at or before ``before``, oldest first."""
        ...

    def trim_inbound_events(self, before: float, limit: int = 200) -> int:
        """Delete up to ``limit`` routed events (every tenant) accepted before ``before``, oldest
        first; how many were deleted. Unrouted events are never deleted."""
        ...

    # API keys
    def put_api_key(self, record: ApiKeyRecord) -> None: ...

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """Look a key up by its hash (across tenants: the key decides the tenant)."""
        ...

    def list_api_keys(self, tenant: str) -> list[ApiKeyRecord]: ...

    # operations
    def ping(self) -> None:
        """Raise ``StoreUnavailable`` if the backend cannot be reached."""
        ...

    def schema_version(self) -> int: ...

    def set_schema_version(self, version: int) -> None: ...

    def close(self) -> None: ...


class StepLogStore(Protocol):
    """Where finished attempts' logs are kept (see :mod:`engine.steplogs`), apart from the store's records.

    Written in batches by one background thread per process, never in a step's transaction;
    read by the API. Every call names its tenant, and tenants' logs are kept apart.
    """

    def put_step_logs(self, records: Sequence[StepLogRecord]) -> None:
        """Create or replace each record (one per tenant, execution, step key, run and attempt)."""
        ...

    def list_step_logs(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        *,
        after: tuple[int, int] | None = None,
        run: int | None = None,
        attempt: int | None = None,
        limit: int = 10,
    ) -> list[StepLogRecord]:
        """The step's records ordered by (run, attempt), only those after ``after`` (a (run, attempt)),
        of ``run`` and of ``attempt`` when given; at most ``limit``."""
        ...

    def delete_step_logs(self, tenant: str, execution_id: str, step_keys: Sequence[str]) -> None:
        """Delete every record of the execution (``step_keys``: all its steps); idempotent."""
        ...

    def close(self) -> None: ...


class AgentData(Protocol):
    """What AI steps keep outside the store: agent checkpoints (one LangGraph thread per step,
    ``<tenant>/<execution>/<step key>``) and long-term memory notes, each recording the
    execution that wrote it."""

    def forget_execution(self, tenant: str, execution_id: str, agent_step_keys: Sequence[str]) -> None:
        """Delete the threads of ``agent_step_keys`` and the memory notes ``execution_id`` wrote
        (a note another execution replaced since stays); idempotent."""
        ...


@dataclass(frozen=True)
class Dispatch:
    """Ask a worker to run one step; ``countdown`` is only ever a few seconds.

    ``urgent`` messages (steps the reconciler recovers: a lost message, a dead worker's step)
    are served before the others waiting on the same queue, so recovery does not wait for a
    backlog to drain.

    ``epoch`` is the step's ``lease_epoch`` when the message was sent. Every claim raises the
    epoch, so a copy of a message that arrives after a later claim (the broker delivered it
    twice) carries a smaller epoch than the step and is known to be stale: it is dropped
    instead of taken for an early timer message (see ``steps._take``). ``None``: unknown (a
    message from a publisher that did not say).
    """

    tenant: str
    execution_id: str
    step_key: str
    queue: str | None = None
    countdown: float = 0.0
    urgent: bool = False
    epoch: int | None = None


class Dispatcher(Protocol):
    """Sends step messages to workers (Celery in production)."""

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None: ...


class MessageLedger(Protocol):
    """Which step messages the broker still holds: published, and not yet taken by a worker.

    The reconciler re-sends a QUEUED step whose message is old; the ledger tells a message
    that is lost (never published, flushed with the broker, taken by a worker that died with
    it) from one waiting behind a backlog, which must not be sent twice. Kept beside the
    messages, so losing them loses it too.
    """

    def held(self, steps: Sequence[StepRecord], since: float) -> list[bool]:
        """For each step, whether a message for it, published at ``since`` or later, is still held."""
        ...


class EventSink(Protocol):
    """Live fan-out of committed events (a Redis Stream per execution)."""

    def publish(self, events: Sequence[EventRecord]) -> None: ...


class Publisher(Protocol):
    """Publishes messages to Pub/Sub topics (``pubsub.publish`` steps, the bridge's dead letters)."""

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish one message and wait until the broker has it; its message id.

        ``NotFound`` when the topic does not exist, ``StoreUnavailable`` when it cannot be reached.
        """
        ...


class DeadLetterLog(Protocol):
    """The recent dead letters of each tenant (see :class:`~engine.records.DeadLetterRecord`), bounded."""

    def record(self, entry: DeadLetterRecord) -> None:
        """Keep ``entry`` as its tenant's most recent; the oldest beyond the bound are forgotten."""
        ...

    def recent(self, tenant: str, limit: int = 50) -> list[DeadLetterRecord]:
        """The tenant's most recent dead letters, newest first."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


@dataclass(frozen=True)
class ModelCall:
    """One chat model call of an AI step, for metrics."""

    workflow: str
    step_id: str
    model: str
    seconds: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    #: The exception's type name when the call failed.
    error: str | None = None


class ModelTelemetry(Protocol):
    """Metrics of model calls (Prometheus in production); cheap, never raises."""

    def model_call(self, call: ModelCall) -> None: ...


class AgentRuntime(Protocol):
    """Runs AI work for ``ai.*`` steps: chat models, agents and their checkpoints (LangGraph).

    One agent step's attempts share one checkpointed thread, so an attempt continues where
    the last one stopped and a finished thread is answered without calling a model again.
    """

    async def run_agent(self, ctx: StepContext, request: AgentRequest) -> AgentOutcome:
        """Start, continue or resume the step's agent thread; its answer, or the interrupt it stopped at."""
        ...

    async def choose(self, ctx: StepContext, request: ChoiceRequest) -> Choice:
        """Ask a model to pick one route, with rationale and confidence (structured output)."""
        ...


@dataclass(frozen=True)
class ArmOutcome:
    """How a bandit decision turned out: ``successes`` and ``failures`` (pseudo-counts, fractions
    allowed) for ``arm`` of ``bandit``, counted once per ``marker`` of the execution, at ``at``;
    with ``half_life`` (seconds), also into the decayed counts of that half-life."""

    tenant: str
    execution_id: str
    marker: str
    bandit: str
    arm: str
    successes: float
    failures: float
    at: float
    half_life: float | None = None


class DecisionStats(Protocol):
    """Success/failure counts of bandit arms (routing alternatives), per tenant and bandit.

    Counts are spread so concurrent rewards do not contend on one record (Firestore: shard
    documents with server-side increments).
    """

    def record_outcome(self, outcome: ArmOutcome) -> bool:
        """Count ``outcome`` at most once per (tenant, execution, marker); ``False``: counted before.

        The marker and the counts commit together (one transaction or one atomic batch), so a
        crash leaves both or neither: calling again after a crash counts it exactly once.
        """
        ...

    def arm_counts(
        self, tenant: str, bandit: str, *, half_life: float | None = None, now: float = 0.0
    ) -> dict[str, tuple[float, float]]:
        """Every arm with its (successes, failures); ``{}`` if none. With ``half_life``, the
        counts recorded with that half-life, each weighed ``2 ** (-(now - at) / half_life)``
        (see :mod:`engine.bandit`)."""
        ...


class PromptStore(Protocol):
    """The tenants' named, versioned prompt templates (versions never change once added)."""

    def add_prompt_version(
        self, tenant: str, name: str, template: str, system: str | None, description: str | None, now: float
    ) -> tuple[PromptRecord, bool]:
        """Add the next version of ``name`` (1 for a new prompt), atomically; when the newest
        version holds the same texts, return it instead. ``True``: a version was added."""
        ...

    def get_prompt(self, tenant: str, name: str, version: int | None = None) -> PromptRecord | None:
        """One version, or the newest when ``version`` is ``None``."""
        ...

    def list_prompts(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        """The newest version of each prompt, by name."""
        ...

    def list_prompt_versions(self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        """Versions of ``name``, newest first."""
        ...


@dataclass(frozen=True)
class StepAttempt:
    """One attempt of a step as its worker saw it, for metrics."""

    workflow: str
    step_type: str
    #: How the attempt ended for this worker: succeeded, failed, waiting or lease-lost.
    outcome: str
    #: The attempt's wall time, running and recording.
    seconds: float
    #: From the step's dispatch to the start of this attempt (None when not known).
    queue_wait: float | None
    #: The step's attempt number (2 and more: a retry).
    attempt: int
    tenant: str = ""
    execution_id: str = ""
    step_key: str = ""
    #: When the attempt started (seconds since the epoch).
    started_at: float = 0.0
    #: Run inline after the step of the message being handled (no message of its own).
    followed: bool = False


class Telemetry(Protocol):
    """Operational metrics of what the engine did (Prometheus in production, nothing embedded).

    Called after the fact and never in a transaction; an implementation must be cheap and never
    raise into the engine.
    """

    def step_attempt(self, attempt: StepAttempt) -> None: ...

    def execution_started(self, workflow: str) -> None: ...

    def execution_settled(self, workflow: str, status: str, seconds: float) -> None: ...

    def reconciled(self, repairs: dict[str, int]) -> None:
        """One reconciler pass's repairs by kind (expired_leases, timers, redispatched, ...)."""
        ...

    def executions_purged(self, count: int, reason: str) -> None:
        """``count`` executions were deleted with everything derived from them; ``reason`` is
        ``expired`` (retention, by the reconciler) or ``deleted`` (asked for through the API)."""
        ...


@dataclass(frozen=True)
class HttpRequest:
    """One outbound HTTP request; limits left ``None`` take the client's configured defaults."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    timeout: float | None = None
    max_response_bytes: int | None = None
    follow_redirects: bool = True


@dataclass(frozen=True)
class HttpResponse:
    """What came back: the final URL after redirects, and the whole body (within the size limit)."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    redirects: int = 0


class HttpClient(Protocol):
    """Outbound HTTP under the egress policy (:mod:`engine.egress`).

    Raises ``EgressDenied`` (before any connection to a refused destination is opened,
    redirects included) or ``OutboundRequestFailed``; an HTTP error status is a response,
    not an exception.
    """

    async def send(self, request: HttpRequest) -> HttpResponse: ...


class Resolver(Protocol):
    """Name resolution for outbound connections (the system resolver in production)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to, as text; an unknown name gives ``[]``."""
        ...
