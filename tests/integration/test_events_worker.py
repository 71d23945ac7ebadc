"""External events in the production topology: Firestore emulator, Redis broker, a real Celery worker.

The worker parks the step (registering its waiter, scanning the log); the event comes through
the router in this process, as from the API or the bridge; the worker runs what follows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.router import EventRouter
from engine.states import ExecutionStatus, StepStatus
from tests.integration.conftest import TENANT, World

WORKFLOW = {
    "name": "it-events",
    "steps": [
        {"id": "first", "type": "transform", "with": {"value": "${input.order}"}},
        {
            "id": "paid",
            "type": "wait_for_event",
            "needs": ["first"],
            "with": {"type": "payment.settled", "correlation_key": "input.order", "match": "event.data.amount > 0"},
        },
        {"id": "after", "type": "transform", "needs": ["paid"], "with": {"value": "${steps.paid.output.data.amount}"}},
    ],
    "outputs": {"amount": "steps.after.output"},
}


def test_an_event_wakes_a_step_parked_by_a_real_worker_on_firestore(make_world: Callable[..., World]) -> None:
    world = make_world("firestore")
    world.apply(WORKFLOW)
    router = EventRouter(world.service)
    with world.worker():
        execution_id = world.start("it-events", {"order": "A-1"})
        early = world.start("it-events", {"order": "B-2"})
        router.publish(TENANT, type="payment.settled", correlation_key="B-2", data={"amount": 5})  # before it waits
        deadline = time.monotonic() + 60
        while {s.key: s.status for s in world.service.list_steps(TENANT, execution_id)}.get(
            "paid"
        ) != StepStatus.WAITING:
            assert time.monotonic() < deadline, "the step never parked"
            time.sleep(0.1)
        router.publish(TENANT, type="payment.settled", correlation_key="A-1", data={"amount": 0})  # match false
        router.publish(TENANT, type="payment.settled", correlation_key="A-1", data={"amount": 9}, event_id="pay-9")
        finished = world.wait(execution_id)
        finished_early = world.wait(early)
    assert finished.status is ExecutionStatus.SUCCEEDED and finished.output == {"amount": 9}
    assert finished_early.status is ExecutionStatus.SUCCEEDED and finished_early.output == {"amount": 5}
    paid = {s.key: s for s in world.service.list_steps(TENANT, execution_id)}["paid"]
    assert paid.wait["delivered"] == {"kind": "event", "id": "pay-9"}
