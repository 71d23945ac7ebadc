"""Live execution events on Redis Streams: one stream per execution, bounded and expiring.

Stream ``conveyor:events:{tenant}:{execution_id}`` holds one entry per committed event,
with a single field ``event`` carrying the event as JSON. Each publish trims the stream to
about ``maxlen`` entries (``MAXLEN ~``: Redis trims whole internal nodes, which is far
cheaper than exact trimming) and pushes its expiry ``ttl_seconds`` ahead, so the streams
of finished executions disappear on their own.

The reading side (:meth:`RedisEventLog.read` and friends) implements
:class:`~engine.adapters.events_memory.EventLog`; see that module for how a live stream
combines a snapshot with ``last_id``, ``read`` and ``expired``. ``expired`` reads
``XINFO STREAM``'s ``entries-added`` (Redis 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import redis
import redis.asyncio as aredis
import structlog
from redis.typing import KeyT, StreamIdT

from engine.adapters.events_memory import LiveEvent, StreamPosition, parse_stream_id
from engine.adapters.payloads import record_from_dict, record_to_dict, to_json
from engine.errors import StoreUnavailable
from engine.records import EventRecord

log = structlog.get_logger("conveyor.events")

#: Streams outlive their last event by a week: long enough to reconnect to a finished run.
DEFAULT_TTL_SECONDS = 7 * 24 * 3600
KEY_PREFIX = "conveyor:events"
#: The longest ``XREAD BLOCK`` a read asks for (a longer request is shortened to this).
MAX_BLOCK_MS = 5000
#: Socket read timeout: the longest block plus a margin for Redis to answer. redis-py's
#: default (5 s) equals the streams' block time, so every read of an idle stream used to
#: time out and a quiet execution's stream died after 5 s.
SOCKET_TIMEOUT_SECONDS = MAX_BLOCK_MS / 1000 + 10.0
#: Appends events to their streams, then pushes each stream's expiry ahead. KEYS: the
#: streams; ARGV: ttl, maxlen, then (index of the event's stream in KEYS, event JSON) pairs.
_APPEND = """
for i = 3, #ARGV, 2 do
  redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[i + 1])
end
for i = 1, #KEYS do
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
"""


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Redis failures on the reading side become ``StoreUnavailable`` (503 in the API).

    The message clients see names no host or port (those go to the log only).
    """
    try:
        yield
    except redis.RedisError as exc:
        log.warning("live event stream read failed", error=str(exc))
        raise StoreUnavailable("the live event stream is unavailable; reconnect with your last cursor") from exc


def _start(after: str | None) -> str:
    if after is None:
        return "0-0"
    parse_stream_id(after)  # refuse a malformed cursor here, with a clear InvalidRequest
    return after


def _block(block_ms: int) -> int | None:
    return min(block_ms, MAX_BLOCK_MS) if block_ms > 0 else None


def _decode(reply: Any) -> list[LiveEvent]:
    # decode_responses=True and RESP2: [[key, [(stream_id, {field: value}), ...]]]
    if not reply:
        return []
    _, entries = reply[0]
    return [
        LiveEvent(stream_id, record_from_dict(EventRecord, json.loads(fields["event"])))
        for stream_id, fields in entries
    ]


def _first(entries: Any) -> str | None:
    return str(entries[0][0]) if entries else None


def _is_missing_key(exc: redis.ResponseError) -> bool:
    return "no such key" in str(exc).lower()


def _expired(info: dict[str, Any] | None, cursor: StreamPosition) -> bool:
    if info is None:  # the stream expired or never existed: the cursor cannot be honoured
        return True
    if int(info["entries-added"]) <= int(info["length"]):
        return False  # nothing was ever trimmed
    first = info.get("first-entry")
    # Entries are only appended and trimmed from the front, so what was trimmed lies before
    # the first retained entry. A cursor that is exactly the last trimmed entry also counts
    # as expired (Redis does not record trimmed ids): one needless snapshot, never a gap.
    return first is None or cursor < parse_stream_id(str(first[0]))


class RedisEventLog:
    """An :class:`~engine.adapters.events_memory.EventLog` on Redis Streams."""

    def __init__(self, url: str, *, maxlen: int = 10_000, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        self.url = url
        self.maxlen = maxlen
        self.ttl_seconds = ttl_seconds
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_SECONDS)
        # Sent by its digest; redis-py loads it again when a server does not know it (NOSCRIPT).
        self._append = self.client.register_script(_APPEND)
        # redis.asyncio connections belong to the event loop that opened them.
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(cls, url: str, maxlen: int = 10_000) -> RedisEventLog:
        return cls(url, maxlen=maxlen)

    def key(self, tenant: str, execution_id: str) -> str:
        return f"{KEY_PREFIX}:{tenant}:{execution_id}"

    # --- writing ----------------------------------------------------------------------------

    def publish(self, events: Sequence[EventRecord]) -> None:
        """Append events with one script call, so one commit's events stay contiguous per stream.

        One ``EVALSHA`` (a script runs atomically, like MULTI/EXEC) instead of a transaction
        pipeline of an ``XADD`` per event plus ``EXPIRE``: a publish follows every commit, and
        the pipeline's extra commands and replies cost more client CPU than the step itself
        does in Redis. Failures are logged, not raised: this runs after the store committed,
        and the live stream is a best-effort copy of the history (see the EventLog docs).
        """
        if not events:
            return
        keys: dict[str, int] = {}
        args: list[Any] = [self.ttl_seconds, self.maxlen]
        for event in events:
            key = self.key(event.tenant, event.execution_id)
            args += (keys.setdefault(key, len(keys) + 1), to_json(record_to_dict(event)))
        try:
            self._append(keys=list(keys), args=args, client=self.client)
        except redis.RedisError as exc:
            log.warning("could not publish live events", count=len(events), error=str(exc))

    # --- reading ----------------------------------------------------------------------------

    def read(
        self, tenant: str, execution_id: str, after: str | None = None, block_ms: int = 0, count: int = 100
    ) -> list[LiveEvent]:
        streams: dict[KeyT, StreamIdT] = {self.key(tenant, execution_id): _start(after)}
        with _translated():
            return _decode(self.client.xread(streams, count=count, block=_block(block_ms)))

    def first_id(self, tenant: str, execution_id: str) -> str | None:
        with _translated():
            return _first(self.client.xrange(self.key(tenant, execution_id), "-", "+", count=1))

    def last_id(self, tenant: str, execution_id: str) -> str | None:
        with _translated():
            return _first(self.client.xrevrange(self.key(tenant, execution_id), "+", "-", count=1))

    def expired(self, tenant: str, execution_id: str, cursor: str) -> bool:
        position = parse_stream_id(cursor)
        with _translated():
            try:
                info = self.client.xinfo_stream(self.key(tenant, execution_id))
            except redis.ResponseError as exc:
                if not _is_missing_key(exc):
                    raise
                info = None
        return _expired(info, position)

    # --- asyncio ----------------------------------------------------------------------------

    def _aclient(self) -> aredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = aredis.Redis.from_url(
                self.url, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_SECONDS
            )
        return client

    async def aread(
        self, tenant: str, execution_id: str, after: str | None = None, block_ms: int = 0, count: int = 100
    ) -> list[LiveEvent]:
        """Like :meth:`read`; a blocked read holds one pooled connection while it waits."""
        streams: dict[KeyT, StreamIdT] = {self.key(tenant, execution_id): _start(after)}
        with _translated():
            return _decode(await self._aclient().xread(streams, count=count, block=_block(block_ms)))

    async def afirst_id(self, tenant: str, execution_id: str) -> str | None:
        with _translated():
            return _first(await self._aclient().xrange(self.key(tenant, execution_id), "-", "+", count=1))

    async def alast_id(self, tenant: str, execution_id: str) -> str | None:
        with _translated():
            return _first(await self._aclient().xrevrange(self.key(tenant, execution_id), "+", "-", count=1))

    async def aexpired(self, tenant: str, execution_id: str, cursor: str) -> bool:
        position = parse_stream_id(cursor)
        with _translated():
            try:
                info = await self._aclient().xinfo_stream(self.key(tenant, execution_id))
            except redis.ResponseError as exc:
                if not _is_missing_key(exc):
                    raise
                info = None
        return _expired(info, position)

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        """Close the asyncio connections of the running loop (call on API shutdown)."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
