"""``summarize:`` bounds an agent thread's memory: older turns are replaced by a summary written
by a (scripted) model, the scripted agent goes on with its next turn, and usage keeps counting
everything, the summaries included."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import DefinitionInvalid
from engine.states import ExecutionStatus
from tests.harness import Harness

DOUBLE = "tests.unit.fixtures.corefns.double"


def _workflow(summarize: dict[str, Any], turns: int, budget: dict[str, int] | None = None) -> dict[str, Any]:
    script = [{"tool_calls": [{"name": "double", "args": {"x": n}}]} for n in range(turns)]
    script.append({"content": f"done after {turns} lookups"})
    agent: dict[str, Any] = {"model": "fake:agent", "prompt": "double each number", "tools": [DOUBLE]}
    agent["summarize"] = summarize
    if budget is not None:
        agent["budget"] = budget
    return {
        "name": "summarised",
        "models": {"agent": {"script": script}, "notes": {"script": [{"content": "doubled 0..n so far"}]}},
        "steps": [{"id": "agent", "type": "ai.agent", "with": agent}],
    }


def test_a_long_thread_is_summarised_and_the_agent_carries_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path)
    h.apply(_workflow({"model": "fake:notes", "after_messages": 6, "keep_messages": 2}, turns=8))
    execution_id = h.start("summarised")
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    output = h.steps(execution_id)["agent"].output
    assert output["answer"] == "done after 8 lookups"
    assert output["turns"] == 9  # every agent turn, those summarised included
    messages = h.agent_messages(execution_id)
    assert len(messages) <= 7  # bounded: a summary and the kept turns, never the whole conversation
    summaries = [m for m in messages if m.type == "human" and m.text.startswith("Summary of the earlier")]
    assert len(summaries) == 1 and "doubled 0..n so far" in summaries[0].text
    assert summaries[0].additional_kwargs["conveyor_summary"]["turns"] >= 6
    # 9 agent calls, and the summaries' own calls, all in the usage
    assert output["usage"]["calls"] > 9


def test_the_budget_still_counts_what_the_summaries_replaced(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    unbounded = Harness(tmp_path / "a")
    unbounded.apply(_workflow({"model": "fake:notes", "after_messages": 6, "keep_messages": 2}, turns=8))
    first = unbounded.start("summarised")
    unbounded.drain()
    spent = unbounded.steps(first)["agent"].output["usage"]["total_tokens"]
    capped = Harness(tmp_path / "b")
    capped.apply(
        _workflow({"model": "fake:notes", "after_messages": 6, "keep_messages": 2}, 8, budget={"tokens": spent - 1})
    )
    second = capped.start("summarised")
    capped.drain()
    step = capped.steps(second)["agent"]
    assert step.status.value == "FAILED" and step.error["type"] == "BudgetExceeded", step.error


def test_summarize_settings_are_checked_when_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path)
    for bad in ({}, {"after_messages": 4, "keep_messages": 4}, {"after_tokens": 10}, {"model": "nope"}):
        with pytest.raises(DefinitionInvalid):
            h.apply(_workflow(bad, turns=1))
