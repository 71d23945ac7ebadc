"""The tenant quota of active executions, as trigger starts see it.

Counting a tenant's active executions is a store aggregate query, which on Firestore costs
about as much as a whole start. A batch of trigger starts (the Pub/Sub bridge commits dozens
of events per transaction) therefore reuses a recent count, with the executions this process
started since added on top, but only while that count leaves room for everything the batch
may start: when it does not, the tenant is counted again, so no start is refused on a stale
count. Like the API's check (``enforce_quota``), the quota is a bound checked before the
transaction, not an exact count under concurrency: another process's starts within
``max_age`` seconds are seen at the next count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds a count is reused (while it leaves room for the starts asked for).
COUNT_MAX_AGE = 1.0


@dataclass
class _Count:
    active: int
    started: int
    at: float


class ActiveCounts:
    """How many more executions each tenant may start: ``limit`` less its active executions."""

    def __init__(
        self,
        count: Callable[[str], int],
        limit: int,
        *,
        max_age: float = COUNT_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._count = count
        self.limit = limit
        self.max_age = max_age
        self._clock = clock
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()

    def budget(self, tenant: str, wanted: int) -> int:
        """Executions ``tenant`` may still start, for a use case that may start ``wanted``."""
        now = self._clock()
        with self._lock:
            cached = self._counts.get(tenant)
            if cached is not None and now - cached.at < self.max_age:
                left = self.limit - cached.active - cached.started
                if left >= wanted:
                    return left
        active = self._count(tenant)
        with self._lock:
            self._counts[tenant] = _Count(active, 0, now)
        return self.limit - active

    def started(self, tenant: str, count: int = 1) -> None:
        """Executions of ``tenant`` this process just started (committed)."""
        with self._lock:
            cached = self._counts.get(tenant)
            if cached is not None:
                cached.started += count
