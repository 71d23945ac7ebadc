"""Subworkflows on a real Celery worker over Redis: outputs, failure and cancellation cross levels."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from engine.states import ExecutionStatus, StepStatus
from tests.integration.conftest import TENANT, World

pytestmark = pytest.mark.backend

CHILD = {
    "name": "it-child",
    "inputs": {"type": "object", "required": ["mode"], "properties": {"mode": {"type": "string"}}},
    "steps": [
        {"id": "hold", "type": "wait", "when": "input.mode == 'wait'", "with": {"duration": "1h"}},
        {"id": "boom", "type": "fail", "when": "input.mode == 'fail'", "with": {"message": "the child broke"}},
        {"id": "ok", "type": "transform", "when": "input.mode == 'go'", "with": {"value": "${input.mode + '!'}"}},
    ],
    "outputs": {"echo": "steps.ok.output"},
}

PARENT = {
    "name": "it-parent",
    "steps": [
        {"id": "sub", "type": "subworkflow", "with": {"workflow": "it-child", "input": {"mode": "${input.mode}"}}},
        {"id": "after", "type": "transform", "needs": ["sub"], "with": {"value": "${steps.sub.output.echo}"}},
    ],
    "outputs": {"result": "steps.after.output"},
}


def child_of(world: World, parent_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sub = {s.key: s for s in world.service.list_steps(TENANT, parent_id)}.get("sub")
        if sub is not None and sub.status is StepStatus.WAITING:
            return str(sub.wait["child"])
        time.sleep(0.05)
    raise AssertionError(f"the subworkflow step of {parent_id} never waited for a child")


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_subworkflow_outputs_failures_and_cancellation_on_a_real_worker(
    store: str, make_world: Callable[..., World]
) -> None:
    world = make_world(store)
    world.apply(CHILD)
    world.apply(PARENT)
    with world.worker():
        succeeding = world.start("it-parent", {"mode": "go"})
        failing = world.start("it-parent", {"mode": "fail"})
        waiting = world.start("it-parent", {"mode": "wait"})
        waiting_child = child_of(world, waiting)
        world.service.cancel(TENANT, waiting)
        done = world.wait(succeeding)
        failed = world.wait(failing)
    assert done.status is ExecutionStatus.SUCCEEDED, done.error
    assert done.output == {"result": "go!"}
    assert failed.status is ExecutionStatus.FAILED
    assert failed.error["type"] == "SubworkflowFailed"
    assert "the child broke" in failed.error["message"]
    failed_child = world.service.get_execution(TENANT, failed.error["child_execution"])
    assert failed_child.status is ExecutionStatus.FAILED
    assert failed_child.parent == {"execution_id": failing, "step_key": "sub", "depth": 1}
    assert world.service.get_execution(TENANT, waiting).status is ExecutionStatus.CANCELLED
    cancelled_child = world.service.get_execution(TENANT, waiting_child)
    assert cancelled_child.status is ExecutionStatus.CANCELLED
    assert {s.key: s.status for s in world.service.list_steps(TENANT, waiting_child)}["hold"] is StepStatus.CANCELLED
    assert world.runner.errors == []
