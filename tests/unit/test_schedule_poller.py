"""Beat's schedule job with injected clocks: when it polls, and the clock drift warning."""

from __future__ import annotations

import structlog

from beat.schedules import MAX_CLOCK_DRIFT, SchedulePoller


class FakeService:
    def __init__(self, upcoming: float | None) -> None:
        self.upcoming = upcoming
        self.polls: list[float] = []

    def fire_due_triggers(self, horizon: float = 1.0) -> float | None:
        self.polls.append(horizon)
        return self.upcoming


def test_polls_every_interval_and_sooner_when_a_fire_is_closer():
    now = [1000.0]
    service = FakeService(upcoming=None)
    poller = SchedulePoller(lambda: service, interval=1.0, clock=lambda: now[0])  # type: ignore[arg-type,return-value]
    assert poller.tick() == 1.0 and len(service.polls) == 1
    now[0] += 0.4
    assert abs(poller.tick() - 0.6) < 1e-9
    assert len(service.polls) == 1
    now[0] += 0.6
    service.upcoming = now[0] + 0.25
    assert abs(poller.tick() - 0.25) < 1e-9 and len(service.polls) == 2


def test_a_failing_poll_is_logged_and_retried_after_the_interval():
    class Broken:
        def fire_due_triggers(self, horizon: float = 1.0) -> float | None:
            raise RuntimeError("store down")

    poller = SchedulePoller(lambda: Broken(), interval=1.0, clock=lambda: 5.0)  # type: ignore[arg-type,return-value]
    assert poller.tick() == 1.0


def test_warns_when_the_clock_drifts_from_redis_by_more_than_two_seconds():
    local = [1000.0]
    with structlog.testing.capture_logs() as logs:
        poller = SchedulePoller(
            lambda: FakeService(None),  # type: ignore[arg-type,return-value]
            clock=lambda: local[0],
            reference_time=lambda: 1000.5,
        )
        assert poller.check_clock() == 0.0 - 0.5
        local[0] = 1000.5 + MAX_CLOCK_DRIFT + 0.5
        assert poller.check_clock() == MAX_CLOCK_DRIFT + 0.5
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["drift_seconds"] == MAX_CLOCK_DRIFT + 0.5
