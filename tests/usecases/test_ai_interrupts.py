"""Answers to an ``ai.agent`` interrupt (a tool that needs a person's approval) sent before the
step asks: kept, then checked against the interrupt's schema when the step waits."""

from __future__ import annotations

from engine.states import ExecutionStatus, StepStatus
from tests.integration.ai_flows import REFUND_SCRIPT, TOOLS, agent_workflow
from tests.usecases.test_usecases import task


def _early_agent(h) -> str:
    """An agent whose refund tool needs approval, behind a first step: it has not asked yet."""
    definition = agent_workflow("ai-early", REFUND_SCRIPT, approve=[f"{TOOLS}.refund"])
    definition["steps"].insert(0, task("first", "echo", value=1))
    definition["steps"][1]["needs"] = ["first"]
    h.apply(definition)
    return h.start("ai-early", {"order": "A1"})


def test_a_kept_answer_the_interrupt_schema_refuses_is_recorded_and_the_step_waits_on(h):
    """Found in review: an answer kept before the agent asked, and refused by the interrupt's
    schema when it did, was deleted without a trace (the sender had been told it was kept).
    Now the refusal, with every problem, is in the history event of the step's wait, and the
    step waits for a right answer."""
    execution_id = _early_agent(h)
    assert h.service.signal("t1", execution_id, "agent", {"type": "maybe"}).wait == {"signal_kept": True}
    h.drain()
    step = h.steps(execution_id)["agent"]
    assert step.status is StepStatus.WAITING and step.wait["kind"] == "interrupt"
    waiting = [e for e in h.service.events_after("t1", execution_id, None) if e.type == "step.waiting"]
    assert len(waiting) == 1
    refused = waiting[0].data["kept_signal_refused"]
    assert "does not answer the step's interrupt" in refused["reason"] and refused["problems"]
    h.service.signal("t1", execution_id, "agent", {"type": "approve"})
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_a_kept_answer_the_interrupt_schema_takes_resumes_the_agent(h):
    execution_id = _early_agent(h)
    h.service.signal("t1", execution_id, "agent", {"type": "approve"})
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    waiting = [e for e in h.service.events_after("t1", execution_id, None) if e.type == "step.waiting"]
    assert "kept_signal_refused" not in waiting[0].data
