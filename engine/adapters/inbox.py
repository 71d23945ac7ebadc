"""Inbox adapters: a capped Redis Stream per tenant (shared, durable) or process memory (embedded)."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, deque

import redis

from engine.errors import StoreUnavailable
from engine.inbox import InboundEvent

#: How long an event id is remembered for deduplication.
DEDUP_SECONDS = 7 * 24 * 3600

# SET NX and XADD in one script, so an event is appended exactly once even when the same
# id is published concurrently by several API replicas.
_APPEND = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[3])
  return 1
end
return 0
"""


class RedisInbox:
    """Appends events to ``conveyor:inbox:{tenant}``, a stream the trigger router consumes."""

    def __init__(self, client: redis.Redis, *, maxlen: int = 100_000, prefix: str = "conveyor:inbox") -> None:
        self.client = client
        self.maxlen = maxlen
        self.prefix = prefix
        self._script = client.register_script(_APPEND)

    @classmethod
    def from_url(cls, url: str, **kwargs: int | str) -> RedisInbox:
        return cls(redis.Redis.from_url(url), **kwargs)  # type: ignore[arg-type]

    def stream_key(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}}}"

    def append(self, event: InboundEvent) -> bool:
        seen_key = f"{self.prefix}:{{{event.tenant}}}:seen:{event.id}"
        try:
            created = self._script(
                keys=[seen_key, self.stream_key(event.tenant)],
                args=[DEDUP_SECONDS, self.maxlen, json.dumps(event.to_dict())],
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(f"the event inbox is unreachable: {exc}") from None
        return bool(created)


class MemoryInbox:
    """Events kept in process (embedded mode and tests); bounded per tenant."""

    def __init__(self, maxlen: int = 10_000) -> None:
        self.maxlen = maxlen
        self.events: dict[str, deque[InboundEvent]] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()

    def append(self, event: InboundEvent) -> bool:
        key = (event.tenant, event.id)
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self.maxlen * 10:
                self._seen.popitem(last=False)
            self.events.setdefault(event.tenant, deque(maxlen=self.maxlen)).append(event)
        return True
