"""``ctx.cancelled()`` turns true within 1 s of a cancel, with a real Celery worker over Redis.

The default lease is 30 s, so a heartbeat (every 10 s) would notice far later: the worker's
lease keeper reads the step's record every ``cancel_check_seconds`` instead.
"""

from __future__ import annotations

import time
import uuid

import pytest

from engine.states import StepStatus
from tests.integration.conftest import TENANT
from tests.unit.fixtures import outcomefns

F = "tests.unit.fixtures.outcomefns"


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_a_running_step_sees_a_cancel_within_a_second(make_world, store):
    world = make_world(store)
    label = uuid.uuid4().hex
    world.apply({"name": "coop", "steps": [
        {"id": "s", "type": "task", "with": {"function": f"{F}.until_cancelled", "args": {"label": label}}},
    ]})
    with world.worker():
        execution_id = world.start("coop")
        deadline = time.monotonic() + 30
        while world.service.list_steps(TENANT, execution_id)[0].status is not StepStatus.RUNNING:
            assert time.monotonic() < deadline, "the step never started running"
            time.sleep(0.02)
        time.sleep(0.3)  # well into the run, away from the claim
        cancelled_at = time.time()
        world.service.cancel(TENANT, execution_id)
        while label not in outcomefns.noticed and time.time() < cancelled_at + 20:
            time.sleep(0.01)
        world.wait_handled(1)
    assert outcomefns.noticed.pop(label) - cancelled_at < 1.0
    assert world.runner.outcomes["lease-lost"] == 1
