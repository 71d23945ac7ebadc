"""Workflow definitions for the AI step tests (scripted ``fake:`` models, tools in ``ai_tools``)."""

from __future__ import annotations

from typing import Any

from tests.integration import ai_tools

TOOLS = f"{ai_tools.__name__}"


def agent_workflow(name: str, script: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    """One ``ai.agent`` step over the scripted model ``support`` with the two shop tools."""
    step_config: dict[str, Any] = {
        "model": "fake:support",
        "prompt": "Customer asks about order ${input.order}",
        "tools": [f"{TOOLS}.lookup_order", f"{TOOLS}.refund"],
    }
    step_config.update(config)
    return {
        "name": name,
        "models": {"support": {"script": script}},
        "steps": [{"id": "agent", "type": "ai.agent", "with": step_config}],
        "outputs": {"answer": "steps.agent.output.answer"},
    }


#: Look the order up, refund it, answer: two tools and an answer.
REFUND_SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "lookup_order", "args": {"order_id": "A1"}}]},
    {"tool_calls": [{"name": "refund", "args": {"order_id": "A1", "amount": 42}}]},
    {"content": "Refunded 42 for order A1."},
]
