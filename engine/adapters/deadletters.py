"""Where the bridge's recent dead letters are kept for people to look at (``DeadLetterLog``).

* :class:`RedisDeadLetters`: one capped list per tenant (``LPUSH`` then ``LTRIM`` in one
  transaction), shared by the bridge that writes and the API processes that read.
* :class:`MemoryDeadLetters`: the same in one process, for a deployment without Redis
  (``conveyor dev``, which runs no bridge, so it stays empty there).

The durable copy of a dead letter is the message on the dead-letter topic; this log only
keeps the last ``size`` per tenant.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import deque

import redis

from engine.errors import StoreUnavailable
from engine.records import DeadLetterRecord

KEY_PREFIX = "conveyor:deadletters"


def _encode(entry: DeadLetterRecord) -> str:
    return json.dumps(dataclasses.asdict(entry), separators=(",", ":"))


def _decode(raw: bytes | str) -> DeadLetterRecord:
    return DeadLetterRecord(**json.loads(raw))


class RedisDeadLetters:
    def __init__(self, url: str, size: int) -> None:
        self.client = redis.Redis.from_url(url)
        self.size = size

    def key(self, tenant: str) -> str:
        return f"{KEY_PREFIX}:{tenant}"

    def record(self, entry: DeadLetterRecord) -> None:
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.lpush(self.key(entry.tenant), _encode(entry))
                pipe.ltrim(self.key(entry.tenant), 0, self.size - 1)
                pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable("the dead-letter log is unavailable") from exc

    def recent(self, tenant: str, limit: int = 50) -> list[DeadLetterRecord]:
        try:
            raw = self.client.lrange(self.key(tenant), 0, max(0, min(limit, self.size)) - 1)
        except redis.RedisError as exc:
            raise StoreUnavailable("the dead-letter log is unavailable") from exc
        return [_decode(item) for item in raw]

    def close(self) -> None:
        self.client.close()


class MemoryDeadLetters:
    def __init__(self, size: int) -> None:
        self.size = size
        self._lists: dict[str, deque[DeadLetterRecord]] = {}
        self._lock = threading.Lock()

    def record(self, entry: DeadLetterRecord) -> None:
        with self._lock:
            self._lists.setdefault(entry.tenant, deque(maxlen=self.size)).appendleft(entry)

    def recent(self, tenant: str, limit: int = 50) -> list[DeadLetterRecord]:
        with self._lock:
            return list(self._lists.get(tenant, ()))[: max(0, limit)]
