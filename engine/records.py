"""Persistent records: what the store keeps for workflows, executions, steps and events.

Records are plain mutable dataclasses so use cases can build the next version of a record
and hand it to the store inside a transaction. Every record carries its tenant and the
schema version it was written with (see :mod:`engine.migrations`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.states import ExecutionStatus, StepStatus

SCHEMA_VERSION = 3


@dataclass
class WorkflowVersionRecord:
    """One immutable, numbered version of a workflow definition."""

    tenant: str
    name: str
    version: int
    definition: dict[str, Any]
    digest: str
    created_at: float
    archived: bool = False
    schema_version: int = SCHEMA_VERSION


class Deferred:
    """A stored JSON value a store read but did not decode: the record decodes it on first use."""

    __slots__ = ("_decode",)

    def __init__(self, decode: Callable[[], Any]) -> None:
        self._decode = decode

    def decode(self) -> Any:
        return self._decode()


class DecodedOnUse:
    """A record field that may hold a :class:`Deferred`, decoded (once) when first read.

    Raising ``AttributeError`` on class access tells ``dataclass`` the field has no default.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    def __get__(self, record: object, owner: type | None = None) -> Any:
        if record is None:
            raise AttributeError(self._slot)
        value = record.__dict__[self._slot]
        if type(value) is Deferred:
            value = record.__dict__[self._slot] = value.decode()
        return value

    def __set__(self, record: object, value: Any) -> None:
        record.__dict__[self._slot] = value


@dataclass
class ExecutionRecord:
    """The small header of one execution; steps live in their own records.

    ``input`` never changes once the execution is created, and most transactions never look
    at it (a foreach item's completion, for one): a store may hand it over as a
    :class:`Deferred`, so a large input is decoded only by the code that reads it.
    """

    id: str
    tenant: str
    workflow: str
    version: int
    status: ExecutionStatus
    created_at: float
    updated_at: float
    # Required like the fields above (see DecodedOnUse); declared after them so that static
    # checkers, which take the descriptor for a default, accept the order.
    input: Any = DecodedOnUse()
    output: Any = None
    error: dict[str, Any] | None = None
    deadline_at: float | None = None
    finished_at: float | None = None
    idempotency_key: str | None = None
    run: int = 1
    #: For a child execution: ``execution_id`` and ``step_key`` of the parent step, and ``depth``.
    parent: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: The trigger (schedule or event) that started this execution, if one did: a schedule's
    #: overlap policy reads it, and executions can be searched by it.
    trigger_id: str | None = None
    #: Model usage of the execution's AI steps, by step key (each over all its attempts).
    usage: dict[str, Any] | None = None
    #: When the execution is due for deletion (see :mod:`engine.retention`): set when it reaches
    #: a terminal status (``None``: kept forever, or still active).
    expires_at: float | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass
class StepRecord:
    """One step (or one foreach item) of one execution.

    ``key`` is the step id, or ``"<id>[<index>]"`` for a foreach item. ``lease_epoch`` grows on
    every claim; a completion must present the epoch it claimed with (fencing).

    An expanded foreach parent records how many items its list has (``item_count``); the list
    itself lives in :class:`ItemChunkRecord` slices and each item record carries its own
    ``item``, so no transaction about one item reads the whole list. ``items`` is the whole
    list inline, as parents expanded by Conveyor before ``item_count`` existed hold it: read
    for them, never written.
    """

    execution_id: str
    tenant: str
    key: str
    step_id: str
    status: StepStatus
    attempt: int = 0
    lease_epoch: int = 0
    lease_until: float | None = None
    dispatched_at: float | None = None
    wake_at: float | None = None
    queue: str | None = None
    index: int | None = None
    item: Any = None
    items: list[Any] | None = None
    item_count: int | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    wait: dict[str, Any] | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    run: int = 1
    schema_version: int = SCHEMA_VERSION


@dataclass
class ItemChunkRecord:
    """A slice of a foreach's evaluated list: elements ``chunk * size`` up to ``(chunk + 1) * size``.

    Written once, when the foreach expands; read when an ending item creates a later item, so
    that transaction decodes one slice, not the whole list.
    """

    tenant: str
    execution_id: str
    step_id: str
    chunk: int
    items: list[Any]
    schema_version: int = SCHEMA_VERSION


@dataclass
class EventRecord:
    """One entry of an execution's history: every transition emits exactly one."""

    id: str
    execution_id: str
    tenant: str
    type: str
    at: float
    step_key: str | None = None
    status: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION


@dataclass
class StepLogRecord:
    """What one attempt of a step logged (``logging`` records and ``print`` output), bounded.

    ``lines`` holds at most the configured number of lines (and bytes), each
    ``{"seq", "at", "level", "logger", "message"}`` with ``at`` in epoch seconds; ``dropped``
    counts the lines over the bound, which are not kept. One record per (run, attempt):
    ``run`` is the execution's run (an execution retry starts a new one, counting attempts
    from 1 again).
    """

    tenant: str
    execution_id: str
    step_key: str
    run: int
    attempt: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    schema_version: int = SCHEMA_VERSION


@dataclass
class TriggerRecord:
    """A schedule or event trigger that starts a workflow.

    For a schedule, the fields after ``next_fire_at`` are its runtime state, written in the
    transactions that fire it and that end the executions it started: the counters, the
    active executions it started (``running``, what its overlap policy looks at) and the
    fire times buffered until they end (``pending``). An event trigger's starts are not
    counted here (every event's transaction would write this record): only those its tenant's
    quota skipped (``skipped``) and why the last one started nothing (``last_error``).
    """

    id: str
    tenant: str
    workflow: str
    kind: str
    spec: dict[str, Any]
    enabled: bool = True
    input: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    next_fire_at: float | None = None
    last_fire_at: float | None = None
    #: Why the last fire started nothing (e.g. the workflow was archived); cleared by a start.
    last_error: str | None = None
    fired: int = 0
    missed: int = 0
    skipped: int = 0
    buffered: int = 0
    running: list[str] = field(default_factory=list)
    pending: list[float] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION


@dataclass
class InboundEventRecord:
    """An external event in its tenant's durable event log; ``id`` is the deduplication key.

    ``route`` names who may wait for it (see :func:`engine.eventlog.route_of`); ``routed``
    turns true once triggers and waiting steps have been offered the event, so a router that
    died after accepting it is caught up by the reconciler.
    """

    tenant: str
    id: str
    type: str
    accepted_at: float
    data: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    correlation_key: str | None = None
    route: str = ""
    routed: bool = False
    schema_version: int = SCHEMA_VERSION


@dataclass
class DeadLetterRecord:
    """A message the Pub/Sub bridge dead-lettered instead of making it an event, and why.

    Kept per tenant, most recent first, for people to look at (the console, ``GET
    /v1/events/dead-letters``); the durable copy is the message on the dead-letter topic.
    ``data`` is the message body as text (bytes that are not UTF-8 replaced), cut to a bound;
    ``data_bytes`` is the body's full size.
    """

    tenant: str
    message_id: str
    subscription: str
    reason: str
    detail: str
    at: float
    attributes: dict[str, str] = field(default_factory=dict)
    data: str = ""
    data_bytes: int = 0


@dataclass
class WaiterRecord:
    """A step WAITING for an external event on ``route``, registered when it started waiting."""

    tenant: str
    execution_id: str
    step_key: str
    route: str
    since: float
    schema_version: int = SCHEMA_VERSION


@dataclass
class SignalRecord:
    """A signal sent before its step was WAITING, kept until the step waits and takes it."""

    tenant: str
    execution_id: str
    step_key: str
    payload: Any
    at: float
    schema_version: int = SCHEMA_VERSION


@dataclass
class ApiKeyRecord:
    """An API key: only its hash is stored."""

    id: str
    tenant: str
    role: str
    key_hash: str
    name: str
    created_at: float
    expires_at: float | None = None
    revoked: bool = False
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class Page:
    """A page of a listing; ``next_cursor`` is opaque and ``None`` on the last page."""

    items: list[Any]
    next_cursor: str | None = None
