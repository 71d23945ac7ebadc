"""Live execution events kept in process, for embedded mode (``conveyor dev``, ``conveyor run``).

This module also defines the reading interface that both live event logs offer
(:class:`EventLog`): :class:`MemoryEventLog` here and
:class:`~engine.adapters.events_redis.RedisEventLog` on Redis Streams. The API's live
streams (WebSocket, SSE, GraphQL subscriptions) are written against :class:`EventLog` only.

How a live stream uses it (ARCHITECTURE §6)::

    if cursor is not None and log.expired(tenant, execution_id, cursor):
        send a fresh snapshot; cursor = log.last_id(tenant, execution_id)
    elif cursor is None:
        cursor = log.last_id(tenant, execution_id)   # read the position first...
        send a snapshot                               # ...so nothing falls between them
    while client connected:
        for live in log.read(tenant, execution_id, after=cursor, block_ms=15_000):
            send live.event with id=live.stream_id; cursor = live.stream_id

Events that land between ``last_id`` and the snapshot are both in the snapshot and sent
again; clients apply events idempotently (by ``event.id``), so that overlap is harmless,
while the opposite order could lose an event.

Stream ids are Redis's ``<milliseconds>-<sequence>`` format: they sort in publishing order,
are opaque to clients, and are the only cursor clients hand back.

Live fan-out is best effort by design: the store's history is authoritative. A publish
that failed (Redis unreachable) leaves a gap in the live stream only; readers that must be
exact can fill it from ``Service.events_after(last event.id)``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from engine.errors import InvalidRequest
from engine.ports import EventSink
from engine.records import EventRecord

StreamPosition = tuple[int, int]

#: Streams kept by one in-process log; the least recently written ones are dropped first.
MAX_STREAMS = 10_000


@dataclass(frozen=True)
class LiveEvent:
    """One event read from a live stream: ``stream_id`` is the cursor to resume after it."""

    stream_id: str
    event: EventRecord


class EventLog(EventSink, Protocol):
    """A bounded live log per execution: publish committed events, read them in order.

    ``after`` is a ``stream_id`` previously returned (``None``: from the oldest retained
    event). ``block_ms`` > 0 waits up to that long when nothing newer exists; 0 returns at
    once. ``count`` bounds one read. A malformed cursor raises ``InvalidRequest``; an
    unreachable backend raises ``StoreUnavailable``. The ``a``-prefixed methods are the
    same for asyncio code (the API); they never block the event loop.
    """

    def read(
        self, tenant: str, execution_id: str, after: str | None = None, block_ms: int = 0, count: int = 100
    ) -> list[LiveEvent]:
        """Events with a stream id greater than ``after``, oldest first, at most ``count``."""
        ...

    def first_id(self, tenant: str, execution_id: str) -> str | None:
        """The oldest retained stream id; ``None`` when the stream is empty or gone."""
        ...

    def last_id(self, tenant: str, execution_id: str) -> str | None:
        """The newest stream id; ``None`` when the stream is empty or gone."""
        ...

    def expired(self, tenant: str, execution_id: str, cursor: str) -> bool:
        """True when events after ``cursor`` were trimmed, or the stream itself is gone.

        Reading on from an expired cursor would skip events: send a fresh snapshot instead.
        An implementation may err towards True (Redis does for a cursor that is exactly the
        last trimmed event): that costs a snapshot, never a gap.
        """
        ...

    async def aread(
        self, tenant: str, execution_id: str, after: str | None = None, block_ms: int = 0, count: int = 100
    ) -> list[LiveEvent]: ...

    async def afirst_id(self, tenant: str, execution_id: str) -> str | None: ...

    async def alast_id(self, tenant: str, execution_id: str) -> str | None: ...

    async def aexpired(self, tenant: str, execution_id: str, cursor: str) -> bool: ...


def parse_stream_id(value: str) -> StreamPosition:
    """``"<ms>-<seq>"`` (or ``"<ms>"``) as a comparable pair; ``InvalidRequest`` if malformed."""
    ms, dash, seq = value.partition("-")
    if not ms.isdigit() or (dash and not seq.isdigit()):
        raise InvalidRequest(f"invalid stream cursor {value!r}: expected '<milliseconds>-<sequence>'")
    return int(ms), int(seq) if dash else 0


def format_stream_id(position: StreamPosition) -> str:
    return f"{position[0]}-{position[1]}"


@dataclass
class _Stream:
    entries: list[tuple[StreamPosition, LiveEvent]] = field(default_factory=list)
    #: The newest position trimmed away: a cursor before it has missed events.
    trimmed: StreamPosition = (0, 0)


_Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class MemoryEventLog:
    """An :class:`EventLog` in process memory, bounded per stream and in stream count."""

    _shared: ClassVar[MemoryEventLog | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, maxlen: int = 10_000, *, max_streams: int = MAX_STREAMS, clock: Callable[[], float] = time.time
    ) -> None:
        self.maxlen = maxlen
        self.max_streams = max_streams
        self._clock = clock
        self._changed = threading.Condition()
        self._streams: OrderedDict[tuple[str, str], _Stream] = OrderedDict()
        self._waiters: dict[tuple[str, str], set[_Waiter]] = {}
        self._last: StreamPosition = (0, 0)

    @classmethod
    def shared(cls, maxlen: int = 10_000) -> MemoryEventLog:
        """The process-wide log, so the API and an in-process worker see the same streams.

        The first call decides ``maxlen``.
        """
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls(maxlen)
            return cls._shared

    # --- writing ----------------------------------------------------------------------------

    def publish(self, events: Sequence[EventRecord]) -> None:
        if not events:
            return
        with self._changed:
            touched: set[tuple[str, str]] = set()
            for event in events:
                key = (event.tenant, event.execution_id)
                stream = self._streams.get(key)
                if stream is None:
                    stream = self._streams[key] = _Stream()
                self._streams.move_to_end(key)
                position = self._next_position()
                stream.entries.append((position, LiveEvent(format_stream_id(position), event)))
                touched.add(key)
            for key in touched:
                self._trim(self._streams[key])
            while len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
            self._changed.notify_all()
            waiters = [waiter for key in touched for waiter in self._waiters.get(key, ())]
        for loop, wake in waiters:
            # The reader's loop may have closed since it registered; it no longer listens.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def _next_position(self) -> StreamPosition:
        # Like Redis: milliseconds of the wall clock, a sequence within one millisecond, and
        # never backwards even if the clock is.
        ms = int(self._clock() * 1000)
        self._last = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        return self._last

    def _trim(self, stream: _Stream) -> None:
        excess = len(stream.entries) - self.maxlen
        if excess > 0:
            stream.trimmed = stream.entries[excess - 1][0]
            del stream.entries[:excess]

    # --- reading ----------------------------------------------------------------------------

    def read(
        self, tenant: str, execution_id: str, after: str | None = None, block_ms: int = 0, count: int = 100
    ) -> list[LiveEvent]:
        position = parse_stream_id(after) if after is not None else (0, 0)
        deadline = time.monotonic() + block_ms / 1000
        with self._changed:
            while True:
                found = self._after((tenant, execution_id), position, count)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._changed.wait(remaining)

    def _after(self, key: tuple[str, str], position: StreamPosition, count: int) -> list[LiveEvent]:
        stream = self._streams.get(key)
        if stream is None:
            return []
        start = bisect.bisect_right(stream.entries, position, key=lambda entry: entry[0])
        return [live for _, live in stream.entries[start : start + count]]

    def first_id(self, tenant: str, execution_id: str) -> str | None:
        with self._changed:
            stream = self._streams.get((tenant, execution_id))
            return stream.entries[0][1].stream_id if stream and stream.entries else None

    def last_id(self, tenant: str, execution_id: str) -> str | None:
        with self._changed:
            stream = self._streams.get((tenant, execution_id))
            return stream.entries[-1][1].stream_id if stream and stream.entries else None

    def expired(self, tenant: str, execution_id: str, cursor: str) -> bool:
        position = parse_stream_id(cursor)
        with self._changed:
            stream = self._streams.get((tenant, execution_id))
            return stream is None or stream.trimmed > position

    # --- asyncio ----------------------------------------------------------------------------

    async def aread(
        self, tenant: str, execution_id: str, after: str | None = None, block_ms: int = 0, count: int = 100
    ) -> list[LiveEvent]:
        key = (tenant, execution_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            waiter: _Waiter = (loop, asyncio.Event())
            # Register before reading, so an event published in between still wakes us.
            with self._changed:
                self._waiters.setdefault(key, set()).add(waiter)
            try:
                found = self.read(tenant, execution_id, after, 0, count)
                remaining = deadline - loop.time()
                if found or remaining <= 0:
                    return found
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter[1].wait(), remaining)
            finally:
                with self._changed:
                    waiters = self._waiters.get(key, set())
                    waiters.discard(waiter)
                    if not waiters:
                        self._waiters.pop(key, None)

    async def afirst_id(self, tenant: str, execution_id: str) -> str | None:
        return self.first_id(tenant, execution_id)

    async def alast_id(self, tenant: str, execution_id: str) -> str | None:
        return self.last_id(tenant, execution_id)

    async def aexpired(self, tenant: str, execution_id: str, cursor: str) -> bool:
        return self.expired(tenant, execution_id, cursor)
