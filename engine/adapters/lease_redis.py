"""A Redis lease that lets one instance of many be the active one (beat, a reconciler).

``SET key token NX PX ttl`` takes the lease; the holder renews it with a compare-and-extend
script well before it runs out, and gives it up with compare-and-delete on shutdown. If
the holder dies, another instance takes over once ``ttl`` passed. The check happens before
each firing, so during a network partition two instances can overlap for at most one
``ttl``; every periodic job must therefore be safe to run twice (the reconciler is: each of
its transitions is guarded inside a store transaction).
"""

from __future__ import annotations

import uuid

import redis
import structlog

log = structlog.get_logger("conveyor.lease")

#: Seconds a lease lasts without renewal: how long a dead beat delays its successor.
DEFAULT_TTL_SECONDS = 15.0

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    """Hold ``key`` in Redis under a random token; :meth:`hold` acquires or renews it."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = uuid.uuid4().hex
        self.held = False
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, key: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> RedisLease:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5), key, ttl_seconds)

    @property
    def renew_every(self) -> float:
        """Seconds between renewals: a third of the lease, so two may fail before it lapses."""
        return self.ttl_ms / 3000

    def hold(self) -> bool:
        """Renew the lease if held, else try to take it; False while another instance holds it.

        A Redis error counts as not holding: better no firing than two active instances.
        """
        try:
            if self.held and self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
                return True
            acquired = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except redis.RedisError as exc:
            acquired = False
            log.warning("beat lease unavailable", key=self.key, error=str(exc))
        if acquired != self.held:
            log.info("beat lease acquired" if acquired else "beat lease lost", key=self.key)
        self.held = acquired
        return acquired

    def server_time(self) -> float:
        """Redis ``TIME``: the clock every beat sharing this lease can compare itself with."""
        seconds, microseconds = self.client.time()
        return float(seconds) + microseconds / 1_000_000

    def release(self) -> None:
        """Give the lease up now (on shutdown), so a standby takes over without waiting."""
        if not self.held:
            return
        self.held = False
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError as exc:
            log.warning("could not release the beat lease; it expires by itself", key=self.key, error=str(exc))
