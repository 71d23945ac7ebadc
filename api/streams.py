"""Live progress of one execution: a snapshot, then events, resumable by cursor.

One :class:`ExecutionFeed` serves each connection, whatever its transport (WebSocket, SSE,
GraphQL subscription). It follows ARCHITECTURE §6 and the reading protocol of
:class:`~engine.adapters.events_memory.EventLog`:

- The cursor clients see and hand back is the live log's stream id. Without a cursor, the
  log position is read *before* the snapshot, so an event landing in between is both in the
  snapshot and sent again (harmless: events are applied by id), never lost.
- A cursor the log no longer covers (trimmed past retention, or the stream expired) gets a
  fresh snapshot instead of a replay with a hole in it.
- Live fan-out is best effort; the store's history is authoritative. While the stream is
  idle, the feed compares the store's history since its first delivered event with what it
  delivered: a lost tail is sent in order, a hole in the middle is replaced by a fresh
  snapshot (sending the lost event late could move a client's view backwards). Either way
  the client is consistent again within one heartbeat interval.
- Heartbeats keep idle connections (and proxies) alive.
- A reader task fills a bounded queue that the transport drains. When a client reads more
  slowly than events arrive and the queue fills, the client is disconnected: memory per
  connection never exceeds ``buffer_size`` messages. It can resume from its last cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from starlette.concurrency import run_in_threadpool

from api.auth import Credential
from api.runtime import Runtime, StreamOptions
from api.schemas.executions import Event, ExecutionDetail
from engine.adapters.events_memory import LiveEvent, parse_stream_id
from engine.errors import InvalidRequest, StoreUnavailable
from engine.records import EventRecord, ExecutionRecord, StepRecord

#: The cursor meaning "from the start of the live log" (used when it was empty at snapshot time).
START = "0-0"
#: An event newer than this (seconds) may still be on its way to the live log: the gap check
#: leaves it to the log, which avoids sending it twice.
GAP_GRACE_SECONDS = 2.0
#: Event ids remembered per connection to drop the overlap between gap fills and the log.
_REMEMBERED_IDS = 4096


@runtime_checkable
class LiveLog(Protocol):
    """The reading side of the live event log that the feed needs (asyncio methods)."""

    async def aread(
        self, tenant: str, execution_id: str, after: str | None = None, block_ms: int = 0, count: int = 100
    ) -> list[LiveEvent]: ...

    async def alast_id(self, tenant: str, execution_id: str) -> str | None: ...

    async def aexpired(self, tenant: str, execution_id: str, cursor: str) -> bool: ...


@dataclass(frozen=True)
class Snapshot:
    """The execution and its steps as of ``cursor``."""

    cursor: str
    execution: ExecutionRecord
    steps: list[StepRecord]
    #: True when the client's cursor had expired and this snapshot replaces a replay.
    reset: bool = False


@dataclass(frozen=True)
class Change:
    """One event; resume after it with ``cursor``."""

    cursor: str
    event: EventRecord


@dataclass(frozen=True)
class Heartbeat:
    cursor: str


Message = Snapshot | Change | Heartbeat


class SlowConsumer(Exception):
    """The client fell ``buffer_size`` messages behind and is disconnected."""


def live_log(rt: Runtime) -> LiveLog:
    """The live log the service publishes to; streams need one that can also be read."""
    events = rt.service.events
    if not isinstance(events, LiveLog):
        raise StoreUnavailable("live progress is not available: the event sink cannot be read")
    return events


class ExecutionFeed:
    """The messages of one stream connection, produced into a bounded queue."""

    def __init__(self, rt: Runtime, credential: Credential, execution_id: str, after: str | None = None) -> None:
        self.rt = rt
        self.tenant = credential.principal.tenant
        #: What opened the stream: it ends when that expires or (an API key) is revoked.
        self.credential = credential
        self.execution_id = execution_id
        self.after = after
        self.options: StreamOptions = rt.streams
        self._recheck_at = time.monotonic() + self.options.recheck_seconds
        self.log = live_log(rt)
        self._queue: asyncio.Queue[Message | BaseException] = asyncio.Queue(self.options.buffer_size)
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._first: str | None = None
        self._newest: str | None = None

    async def check(self) -> None:
        """Fail early (before a transport accepts) for an unknown execution or a malformed cursor.

        A cursor past the newest event was never handed out: resuming from it would silently
        skip the events that reach it, so it is refused.
        """
        await run_in_threadpool(self.rt.service.get_execution, self.tenant, self.execution_id)
        if self.after is not None:
            await self.log.aexpired(self.tenant, self.execution_id, self.after)  # InvalidRequest if malformed
            newest = await self.log.alast_id(self.tenant, self.execution_id)
            if newest is not None and parse_stream_id(self.after) > parse_stream_id(newest):
                raise InvalidRequest(f"the cursor {self.after!r} is ahead of this execution's newest event")

    async def messages(self) -> AsyncIterator[Message]:
        """Yield messages until the client goes away; raises ``SlowConsumer`` on overflow.

        Raises ``AuthenticationFailed`` when the credential that opened the stream expires or,
        an API key, is revoked: a stream must not outlive the token (or API key) that was
        checked when it opened.
        """
        producer = asyncio.create_task(self._produce())
        try:
            while True:
                item = await self._next()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer

    async def _next(self) -> Message | BaseException:
        """The next queued item; the credential is checked again at its expiry and, for an
        API key, every ``recheck_seconds`` even while messages keep coming
        (``AuthenticationFailed`` ends the stream)."""
        while True:
            patience = self._patience()
            if patience is None:
                return await self._queue.get()
            try:
                return await asyncio.wait_for(self._queue.get(), patience)
            except TimeoutError:
                await self.rt.auth.recheck(self.credential)
                self._recheck_at = time.monotonic() + self.options.recheck_seconds

    def _patience(self) -> float | None:
        """How long to wait for a message before checking the credential again (None: never)."""
        waits = []
        if self.credential.revocable:
            waits.append(self._recheck_at - time.monotonic())
        expires_at = self.credential.principal.expires_at
        if expires_at is not None:
            waits.append(expires_at - self.rt.service.clock.now())
        return max(min(waits), 0.0) if waits else None

    # --- producing ------------------------------------------------------------------------

    async def _produce(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # hand any failure to the consumer, which re-raises it
            self._queue_error(exc)

    def _queue_error(self, exc: BaseException) -> None:
        # Make room: the error must reach the consumer even when the buffer is full.
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(exc)

    def _put(self, message: Message) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            raise SlowConsumer(f"the client is more than {self.options.buffer_size} messages behind") from None

    async def _run(self) -> None:
        cursor = self.after
        reset = False
        if cursor is not None and await self.log.aexpired(self.tenant, self.execution_id, cursor):
            cursor, reset = None, True
        if cursor is None:
            cursor = await self._fresh_snapshot(reset)
        block_ms = min(self.options.block_ms, int(self.options.heartbeat_seconds * 1000))
        last_sent = time.monotonic()
        while True:
            live = await self.log.aread(self.tenant, self.execution_id, after=cursor, block_ms=block_ms, count=100)
            for item in live:
                cursor = item.stream_id
                if self._remember(item.event):
                    self._put(Change(cursor, item.event))
                    last_sent = time.monotonic()
            if live:
                continue
            # Idle: heal gaps from the store, then keep the connection alive.
            gap = await self._gap()
            if gap is _MIDDLE_GAP:
                cursor = await self._fresh_snapshot(True)
                last_sent = time.monotonic()
            else:
                for event in gap:
                    self._put(Change(cursor, event))
                    last_sent = time.monotonic()
            if time.monotonic() - last_sent >= self.options.heartbeat_seconds:
                self._put(Heartbeat(cursor))
                last_sent = time.monotonic()

    async def _fresh_snapshot(self, reset: bool) -> str:
        """Send a snapshot; returns the live cursor read *before* it (see the module docstring)."""
        cursor = await self.log.alast_id(self.tenant, self.execution_id) or START
        self._put(await self._snapshot(cursor, reset))
        self._first = self._newest = None
        self._delivered.clear()
        return cursor

    async def _snapshot(self, cursor: str, reset: bool) -> Snapshot:
        service = self.rt.service

        def load() -> tuple[ExecutionRecord, list[StepRecord]]:
            execution = service.get_execution(self.tenant, self.execution_id)
            return execution, service.store.list_steps(self.tenant, self.execution_id)

        execution, steps = await run_in_threadpool(load)
        return Snapshot(cursor, execution, steps, reset)

    def _remember(self, event: EventRecord) -> bool:
        """Record a delivery; False when this connection already delivered the event."""
        if event.id in self._delivered:
            return False
        self._delivered[event.id] = None
        if len(self._delivered) > _REMEMBERED_IDS:
            self._delivered.popitem(last=False)
        if self._first is None:
            self._first = event.id
        if self._newest is None or event.id > self._newest:
            self._newest = event.id
        return True

    async def _gap(self) -> list[EventRecord] | Literal[_Gap.MIDDLE]:
        """What the live log missed since this connection's first event, according to the store.

        Missing events newer than everything delivered (a lost tail, typically the final
        transition a client waits for) are returned to be sent in order. A hole *between*
        delivered events cannot be filled without sending an event out of order, which could
        move a client's view backwards: ``_MIDDLE_GAP`` asks for a fresh snapshot instead.
        """
        if self._first is None or self._newest is None:
            return []
        newest = self._newest
        history = await run_in_threadpool(
            self.rt.service.events_after, self.tenant, self.execution_id, _just_before(self._first)
        )
        settled = time.time() - GAP_GRACE_SECONDS
        missing = [e for e in history if e.id not in self._delivered and e.at <= settled]
        if any(e.id < newest for e in missing):
            return _MIDDLE_GAP
        return [e for e in missing if self._remember(e)]


class _Gap(enum.Enum):
    """A sentinel of its own type, so that ``gap is _MIDDLE_GAP`` narrows ``_gap``'s result."""

    MIDDLE = "middle"


_MIDDLE_GAP = _Gap.MIDDLE


def _just_before(event_id: str) -> str:
    """A string sorting right before ``event_id`` and after every shorter-prefixed id below it.

    ``events_after`` is exclusive; this makes it include ``event_id`` itself. Ids are
    lowercase hex, so ``'~'`` sorts after any id character.
    """
    return event_id[:-1] + chr(ord(event_id[-1]) - 1) + "~"


def message_body(message: Message) -> dict[str, Any]:
    """The JSON form of a message, shared by the WebSocket and SSE transports."""
    if isinstance(message, Snapshot):
        detail = ExecutionDetail.build(message.execution, message.steps)
        return {
            "type": "snapshot",
            "cursor": message.cursor,
            "reset": message.reset,
            "execution": detail.model_dump(mode="json"),
        }
    if isinstance(message, Change):
        return {
            "type": "event",
            "cursor": message.cursor,
            "event": Event.from_record(message.event).model_dump(mode="json"),
        }
    return {"type": "heartbeat", "cursor": message.cursor}
