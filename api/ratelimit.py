"""Rate limits per key and per tenant, counted by the ``limits`` library.

Counters live in Redis when ``settings.redis_url`` is set (shared by every API replica)
and in process memory otherwise (embedded/dev). The sliding-window-counter strategy is
used: constant memory per identity and no burst at window edges.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

from engine.auth import Principal
from engine.errors import RateLimited


class RateLimiter:
    """Counts one hit per request against the caller's key and its tenant."""

    def __init__(self, key_limit: str, tenant_limit: str, *, redis_url: str | None = None, prefix: str = "conveyor-rl"):
        self.key_limit: RateLimitItem = parse(key_limit)
        self.tenant_limit: RateLimitItem = parse(tenant_limit)
        if redis_url:
            storage = storage_from_string(f"async+{redis_url}", implementation="redispy", key_prefix=prefix)
        else:
            storage = storage_from_string("async+memory://")
        assert isinstance(storage, Storage)
        self.storage = storage
        self._strategy = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, principal: Principal) -> None:
        """Count a request; raise ``RateLimited`` with a ``retry_after`` when a limit is exhausted."""
        checks = (
            (self.key_limit, ("key", principal.tenant, principal.rate_key), "this API key"),
            (self.tenant_limit, ("tenant", principal.tenant), "this tenant"),
        )
        for item, identifiers, who in checks:
            if not await self._strategy.hit(item, *identifiers):
                stats = await self._strategy.get_window_stats(item, *identifiers)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(f"rate limit of {item} exceeded for {who}", retry_after=retry_after)

    async def healthy(self) -> bool:
        try:
            return bool(await self.storage.check())
        except Exception:  # any backend failure means "not ready", never a crash of /readyz
            return False
