"""Approval and subworkflow steps over each real store (SQLite, Firestore emulator), manual clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from engine.errors import AuthenticationFailed, PermissionDenied, TransitionRefused
from engine.orchestration.approvals import Decision
from engine.states import ExecutionStatus, StepStatus

APPROVE = {
    "name": "approve",
    "steps": [
        {"id": "review", "type": "approval", "with": {"roles": ["admin"], "message": "ship it?"}},
        {"id": "after", "type": "transform", "needs": ["review"], "with": {"value": "${steps.review.output.approved}"}},
    ],
    "outputs": {"approved": "steps.after.output"},
}

CHILD = {
    "name": "child",
    "inputs": {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}},
    "steps": [
        {"id": "hold", "type": "wait", "with": {"duration": "1h"}},
        {"id": "boom", "type": "fail", "needs": ["hold"], "when": "input.x < 0", "with": {"message": "negative input"}},
        {"id": "ok", "type": "transform", "needs": ["hold"], "when": "input.x >= 0", "with": {"value": "${input.x * 2}"}},
    ],
    "outputs": {"doubled": "steps.ok.output"},
}

PARENT = {
    "name": "parent",
    "steps": [
        {"id": "sub", "type": "subworkflow", "with": {"workflow": "child", "input": {"x": "${input.x}"}}},
        {"id": "after", "type": "transform", "needs": ["sub"], "with": {"value": "${steps.sub.output.doubled + 1}"}},
    ],
    "outputs": {"result": "steps.after.output"},
}


def decision(approved, role="admin", comment=None, by="key:alice"):
    return Decision(approved, by, role, comment, via="rest")


def waiting(h, execution_id, key):
    h.drain()
    step = h.steps(execution_id)[key]
    assert step.status is StepStatus.WAITING, step
    return step


def test_approval_approved_records_who_when_and_comment(h):
    h.apply(APPROVE)
    execution_id = h.start("approve")
    waiting(h, execution_id, "review")
    h.service.decide_approval("t1", execution_id, "review", decision(True, comment="looks good"))
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    output = h.steps(execution_id)["review"].output
    assert output == {"approved": True, "decision": "approved", "by": "key:alice", "role": "admin",
                      "at": datetime.fromtimestamp(h.clock.now(), UTC).isoformat(), "comment": "looks good", "via": "rest"}
    recorded = [e for e in h.history(execution_id) if e.step_key == "review" and e.status == "SUCCEEDED"]
    assert recorded[0].data["decision"] == output


def test_rejection_fails_the_step_and_a_role_not_listed_may_not_decide(h):
    h.apply(APPROVE)
    execution_id = h.start("approve")
    waiting(h, execution_id, "review")
    with pytest.raises(PermissionDenied, match="role 'operator' may not decide approval 'review'"):
        h.service.decide_approval("t1", execution_id, "review", decision(True, role="operator"))
    with pytest.raises(TransitionRefused, match="a signal cannot end it"):
        h.service.signal("t1", execution_id, "review", {"approved": True})
    assert h.steps(execution_id)["review"].status is StepStatus.WAITING
    h.service.decide_approval("t1", execution_id, "review", decision(False, comment="not today"))
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    review = h.steps(execution_id)["review"]
    assert review.error["type"] == "ApprovalRejected"
    assert review.error["message"] == "rejected by key:alice: not today"
    assert review.output["approved"] is False and review.output["comment"] == "not today"
    with pytest.raises(TransitionRefused):
        h.service.decide_approval("t1", execution_id, "review", decision(True))


def test_rejection_may_continue_and_timeout_takes_the_declared_outcome(h):
    h.apply({"name": "soft", "steps": [
        {"id": "review", "type": "approval", "with": {"on_reject": "continue", "timeout": "1h", "on_timeout": "reject"}},
    ], "outputs": {"approved": "steps.review.output.approved", "via": "steps.review.output.via"}})
    rejected = h.start("soft")
    waiting(h, rejected, "review")
    h.service.decide_approval("t1", rejected, "review", decision(False, role="operator"))
    h.drain()
    assert h.execution(rejected).output == {"approved": False, "via": "rest"}
    timed_out = h.start("soft")
    waiting(h, timed_out, "review")
    h.clock.advance(3601)
    h.service.reconcile()
    h.drain()
    assert h.execution(timed_out).status is ExecutionStatus.SUCCEEDED
    assert h.execution(timed_out).output == {"approved": False, "via": "timeout"}


def test_signed_link_decides_once(make_harness):
    h = make_harness(approval_link_secret="s3cret")
    h.apply(APPROVE)
    execution_id = h.start("approve")
    waiting(h, execution_id, "review")
    with pytest.raises(PermissionDenied):
        h.service.approval_links.issue("t1", execution_id, "review", role="operator", by="bob@example.com")
    token, claims = h.service.approval_links.issue("t1", execution_id, "review", role="admin", by="bob@example.com")
    assert claims.step_key == "review" and claims.tenant == "t1"
    with pytest.raises(AuthenticationFailed):
        h.service.approval_links.decide(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), True)
    h.service.approval_links.decide(token, True, "via mail")
    with pytest.raises(TransitionRefused):
        h.service.approval_links.decide(token, False)
    h.drain()
    review = h.steps(execution_id)["review"]
    assert review.output["by"] == "bob@example.com" and review.output["via"] == "link"
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def child_of(h, parent_id):
    [child] = [e for e in h.service.list_executions("t1").items if (e.parent or {}).get("execution_id") == parent_id]
    return child


def parent_waiting_for_child(h, x):
    """A parent execution whose subworkflow step waits for its child (which waits an hour)."""
    h.apply(CHILD)
    h.apply(PARENT)
    parent_id = h.start("parent", {"x": x})
    waiting(h, parent_id, "sub")
    return parent_id, child_of(h, parent_id)


def pass_the_hour(h):
    h.clock.advance(3601)
    h.service.reconcile()
    h.drain()


def test_subworkflow_returns_the_child_outputs(h):
    parent_id, child = parent_waiting_for_child(h, 4)
    assert child.idempotency_key == f"{parent_id}/sub"
    assert child.parent == {"execution_id": parent_id, "step_key": "sub", "depth": 1}
    pass_the_hour(h)
    assert h.execution(child.id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(parent_id)["sub"].output == {"doubled": 8}
    assert h.execution(parent_id).output == {"result": 9}


def test_child_failure_surfaces_in_the_parent(h):
    parent_id, child = parent_waiting_for_child(h, -1)
    pass_the_hour(h)
    assert h.execution(child.id).status is ExecutionStatus.FAILED
    parent = h.execution(parent_id)
    assert parent.status is ExecutionStatus.FAILED
    error = h.steps(parent_id)["sub"].error
    assert error["type"] == "SubworkflowFailed"
    assert error["child_execution"] == child.id
    assert "negative input" in error["message"]


def test_cancelling_the_parent_cancels_the_child(h):
    parent_id, child = parent_waiting_for_child(h, 1)
    h.service.cancel("t1", parent_id)
    assert h.execution(parent_id).status is ExecutionStatus.CANCELLED
    assert h.execution(child.id).status is ExecutionStatus.CANCELLED
    assert h.steps(child.id)["hold"].status is StepStatus.CANCELLED
    assert h.steps(parent_id)["sub"].status is StepStatus.CANCELLED


def test_subworkflow_depth_is_limited(make_harness):
    h = make_harness(subworkflow_max_depth=2)
    h.apply({"name": "loop", "steps": [{"id": "again", "type": "subworkflow", "with": {"workflow": "loop"}}]})
    root = h.start("loop")
    h.drain()
    executions = h.service.list_executions("t1").items
    assert len(executions) == 3  # the root and two nested children
    assert all(e.status is ExecutionStatus.FAILED for e in executions)
    assert h.steps(root)["again"].error["type"] == "SubworkflowFailed"
    deepest = next(e for e in executions if (e.parent or {}).get("depth") == 2)
    assert h.steps(deepest.id)["again"].error["type"] == "SubworkflowTooDeep"


def test_retrying_the_parent_retries_its_failed_child_and_reuses_it(h):
    # The child's only step fails once (no retries), then succeeds when run again.
    h.apply({"name": "once", "steps": [{"id": "try", "type": "task", "with": {
        "function": "tests.unit.fixtures.corefns.flaky", "args": {"key": "once", "failures": 1}}}],
        "outputs": {"said": "steps.try.output"}})
    h.apply({"name": "outer", "steps": [{"id": "sub", "type": "subworkflow", "with": {"workflow": "once"}}],
             "outputs": {"said": "steps.sub.output.said"}})
    parent_id = h.start("outer")
    h.drain()
    assert h.execution(parent_id).status is ExecutionStatus.FAILED
    child = child_of(h, parent_id)
    assert h.execution(child.id).status is ExecutionStatus.FAILED
    h.service.retry("t1", parent_id)
    h.drain()
    assert h.execution(parent_id).status is ExecutionStatus.SUCCEEDED
    assert h.execution(parent_id).output == {"said": "ok after 1"}
    assert child_of(h, parent_id).id == child.id  # the same child, run again from its failed step
    assert h.execution(child.id).run == 2


def test_a_child_settling_while_its_parent_is_paused_is_recorded(h):
    parent_id, child = parent_waiting_for_child(h, 3)
    h.service.pause("t1", parent_id)
    pass_the_hour(h)
    assert h.execution(child.id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(parent_id)["sub"].status is StepStatus.SUCCEEDED
    assert h.execution(parent_id).status is ExecutionStatus.PAUSED
    h.service.resume("t1", parent_id)
    h.drain()
    assert h.execution(parent_id).output == {"result": 7}


def test_a_link_issued_before_the_step_ran_again_is_refused(make_harness):
    h = make_harness(approval_link_secret="s3cret")
    h.apply(APPROVE)
    execution_id = h.start("approve")
    waiting(h, execution_id, "review")
    stale, _ = h.service.approval_links.issue("t1", execution_id, "review", role="admin", by="bob@example.com")
    h.service.decide_approval("t1", execution_id, "review", decision(False))
    h.drain()
    h.service.retry("t1", execution_id)
    waiting(h, execution_id, "review")
    with pytest.raises(TransitionRefused, match="no longer valid"):
        h.service.approval_links.decide(stale, True)
    fresh, _ = h.service.approval_links.issue("t1", execution_id, "review", role="admin", by="bob@example.com")
    h.service.approval_links.decide(fresh, True)
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
