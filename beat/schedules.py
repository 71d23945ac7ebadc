"""Schedule triggers fire from beat: one job that polls due triggers, in the beat process.

Not a Celery entry per trigger: a single poller asks the store for the triggers due within
the next ``interval`` seconds, fires those whose time has come
(:meth:`engine.service.Service.fire_due_triggers`, one store transaction per trigger) and
wakes again after ``interval`` seconds, or sooner when a fire time is closer. Beat runs it
only while it holds the lease, but the lease only saves work: each fire's deterministic
idempotency key (``trigger_id:<UTC fire time>``) keeps two beats, or a beat with a skewed
clock, from starting a fire time twice. A skewed clock still fires late or early, so the
poller compares it with Redis ``TIME`` now and then and warns about a drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from engine.service import Service

log = structlog.get_logger("conveyor.beat.schedules")

#: Warn when the local clock and Redis disagree by more than this (seconds).
MAX_CLOCK_DRIFT = 2.0
#: Seconds between two clock comparisons.
DRIFT_CHECK_EVERY = 30.0


class SchedulePoller:
    """Fires due schedule triggers when :meth:`tick` finds its time has come."""

    def __init__(
        self,
        service: Callable[[], Service],
        *,
        interval: float = 1.0,
        reference_time: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self.interval = interval
        self._reference_time = reference_time
        self._clock = clock
        self._next_poll = 0.0
        self._next_drift_check = 0.0

    def tick(self) -> float:
        """Poll if it is time; the seconds until the next poll."""
        now = self._clock()
        if now >= self._next_poll:
            self._next_poll = now + self._poll(now)
        if now >= self._next_drift_check:
            self._next_drift_check = now + DRIFT_CHECK_EVERY
            self.check_clock()
        return max(0.0, self._next_poll - now)

    def _poll(self, now: float) -> float:
        try:
            upcoming = self._service().fire_due_triggers(horizon=self.interval)
        except Exception:  # beat must outlive one bad pass (store briefly unreachable...)
            log.exception("schedule poll failed; retrying")
            return self.interval
        if upcoming is None:
            return self.interval
        return min(self.interval, max(0.0, upcoming - self._clock()))

    def check_clock(self) -> float | None:
        """The local clock minus the reference (Redis ``TIME``), warning above :data:`MAX_CLOCK_DRIFT`."""
        if self._reference_time is None:
            return None
        try:
            before = self._clock()
            reference = self._reference_time()
            drift = (before + self._clock()) / 2 - reference
        except Exception as exc:  # a drift check must never stop the schedules
            log.warning("could not compare the clock with Redis", error=str(exc))
            return None
        if abs(drift) > MAX_CLOCK_DRIFT:
            log.warning(
                "local clock drifts from Redis TIME; schedules fire off time on this beat",
                drift_seconds=round(drift, 3),
                limit_seconds=MAX_CLOCK_DRIFT,
            )
        return drift
