"""A long step's ``step.running`` reaches watchers while it runs (issue 11, item 2).

A first delivery runs before its claim, so the history records ``step.running`` only when
the step is claimed (after ``unclaimed_run_seconds``, or with its outcome). The worker
announces the run on the live stream shortly after it begins; the history still holds
exactly one ``step.running`` per attempt. Real Celery worker, Redis broker and Redis live log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from engine.adapters.events_redis import RedisEventLog
from tests.integration import flows
from tests.integration.conftest import TENANT, World

pytestmark = [pytest.mark.backend, pytest.mark.timeout(120)]

#: The issue's bound: from the step's start to a watcher seeing it run.
MAX_DELAY_SECONDS = 1.5


def test_step_running_reaches_a_watcher_within_1_5_s_of_a_long_steps_start(
    make_world: Callable[..., World], redis_server_url: str
) -> None:
    events = RedisEventLog(redis_server_url)
    # A claim point later than the bound: the announcement must not wait for the claim.
    world = make_world(events=events, unclaimed_run_seconds=3.0)
    world.apply({"name": "long", "steps": [flows.task("work", "long_running", args={"seconds": 4})]})
    with world.worker():
        execution_id = world.start("long")
        cursor: str | None = None
        seen_at = None
        deadline = time.monotonic() + 30
        while seen_at is None and time.monotonic() < deadline:
            for item in events.read(TENANT, execution_id, after=cursor, block_ms=50):
                cursor = item.stream_id
                if item.event.type == "step.running" and item.event.step_key == "work":
                    seen_at = time.time()
                    break
        assert seen_at is not None, "no step.running on the live stream"
        assert execution_id in flows.STARTED, "step.running was announced before the step ran"
        delay = seen_at - flows.STARTED[execution_id]
        assert 0 <= delay <= MAX_DELAY_SECONDS, f"step.running reached the watcher {delay:.2f}s after the start"
        assert str(world.wait(execution_id).status) == "SUCCEEDED"
    history = [e.type for e in world.service.events_after(TENANT, execution_id, None) if e.step_key == "work"]
    assert history.count("step.running") == 1, history
    events.close()
