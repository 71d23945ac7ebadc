"""``ai.agent`` steps: real LangGraph graphs with scripted models inside a real Celery worker.

The worker consumes a Redis queue in this process (so the test can count scripted model
calls); the agent's thread is checkpointed with ``AsyncSqliteSaver`` beside the store.
The crash test with SIGKILLed worker processes is in ``tests/chaos/test_ai_agent_crash.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from engine.adapters.ai_models import SCRIPTED_CALLS
from engine.states import ExecutionStatus, StepStatus
from engine.steptypes import get as get_step_type
from engine.steptypes.base import StepContext
from tests.integration import ai_tools
from tests.integration.ai_flows import REFUND_SCRIPT, TOOLS, agent_workflow
from tests.integration.conftest import TENANT, World

pytestmark = pytest.mark.backend


@pytest.fixture
def executions() -> Iterator[list[str]]:
    """Execution ids whose tool side effects are deleted from Redis afterwards."""
    ids: list[str] = []
    yield ids
    for execution_id in ids:
        ai_tools.forget(execution_id)


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_the_agent_calls_two_tools_and_answers(
    store: str, make_world: Callable[..., World], executions: list[str]
) -> None:
    world = make_world(store)
    world.apply(agent_workflow("ai-refund", REFUND_SCRIPT))
    with world.worker():
        execution_id = world.start("ai-refund", {"order": "A1"})
        executions.append(execution_id)
        execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"answer": "Refunded 42 for order A1."}
    step = world.service.list_steps(TENANT, execution_id)[0]
    assert step.output["turns"] == 3
    assert step.output["usage"]["calls"] == 3 and step.output["usage"]["total_tokens"] > 0
    assert (ai_tools.calls(execution_id, "lookup_order"), ai_tools.calls(execution_id, "refund")) == (1, 1)
    # each tool call's side effect is keyed by the step and the model's tool call id
    assert ai_tools.keys(execution_id, "refund") == {f"{execution_id}/agent/call_1_0"}


def test_a_step_whose_thread_finished_answers_without_calling_the_model(
    make_world: Callable[..., World], executions: list[str]
) -> None:
    """A worker that finished the graph but died before recording the outcome: the message
    comes again, and the step returns the checkpointed answer without a model call."""
    world = make_world()
    world.apply(agent_workflow("ai-finished", REFUND_SCRIPT))
    execution_id = world.start("ai-finished", {"order": "A1"})
    executions.append(execution_id)
    # The first attempt's handler runs to the end, but its outcome is never recorded.
    step_type = get_step_type("ai.agent")
    assert step_type is not None
    rendered = {"prompt": "Customer asks about order A1"}
    config = step_type.Config.model_validate(agent_workflow("x", REFUND_SCRIPT)["steps"][0]["with"] | rendered)
    compiled = world.service.compiled(TENANT, "ai-finished", 1)
    ctx = StepContext(
        tenant=TENANT,
        execution_id=execution_id,
        step_key="agent",
        step_id="agent",
        attempt=1,
        input={"order": "A1"},
        ports=world.runner.ports,
        models=compiled.definition.models,
    )
    first = asyncio.run(step_type.run(ctx, config))
    calls_before = SCRIPTED_CALLS["support"]
    with world.worker():
        execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    assert SCRIPTED_CALLS["support"] == calls_before, "the finished thread must not call the model again"
    step = world.service.list_steps(TENANT, execution_id)[0]
    assert step.output == first.output  # type: ignore[union-attr]
    assert ai_tools.calls(execution_id, "refund") == 1


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_a_tool_needing_approval_waits_and_resumes_on_a_signal(
    store: str, make_world: Callable[..., World], executions: list[str]
) -> None:
    world = make_world(store)
    world.apply(agent_workflow("ai-approve", REFUND_SCRIPT, approve=[f"{TOOLS}.refund"]))
    with world.worker():
        execution_id = world.start("ai-approve", {"order": "A1"})
        executions.append(execution_id)
        step = _wait_step(world, execution_id, StepStatus.WAITING)
        interrupt = step.wait["interrupt"]
        assert step.wait["kind"] == "interrupt"  # what it waits for, like "approval" or "event" (was "timer")
        assert interrupt["request"]["name"] == "refund"
        assert interrupt["request"]["args"] == {"order_id": "A1", "amount": 42}
        assert ai_tools.calls(execution_id, "refund") == 0, "nothing is refunded before the approval"
        with pytest.raises(Exception, match="does not answer the step's interrupt"):
            world.service.signal(TENANT, execution_id, "agent", {"type": "maybe"})
        world.service.signal(TENANT, execution_id, "agent", {"type": "approve"})
        execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"answer": "Refunded 42 for order A1."}
    assert (ai_tools.calls(execution_id, "lookup_order"), ai_tools.calls(execution_id, "refund")) == (1, 1)
    history = [e.type for e in world.service.events_after(TENANT, execution_id, None) if e.step_key == "agent"]
    assert history.count("step.waiting") == 1 and history[-1] == "step.succeeded"


def test_an_exceeded_budget_fails_the_step_and_a_retry_does_not_reset_it(
    make_world: Callable[..., World], executions: list[str]
) -> None:
    script = [
        {"tool_calls": [{"name": "lookup_order", "args": {"order_id": "A1"}}], "usage": {"input": 60, "output": 50}},
        {"content": "never reached", "usage": {"input": 10, "output": 10}},
    ]
    world = make_world()
    definition = agent_workflow("ai-budget", script, budget={"tokens": 100})
    definition["steps"][0]["retry"] = {"max_attempts": 3, "initial": "0.01s"}
    world.apply(definition)
    with world.worker():
        execution_id = world.start("ai-budget", {"order": "A1"})
        executions.append(execution_id)
        execution = world.wait(execution_id)
        assert execution.status is ExecutionStatus.FAILED
        step = world.service.list_steps(TENANT, execution_id)[0]
        assert (step.error or {}).get("type") == "BudgetExceeded", step.error
        assert step.attempt == 1, "BudgetExceeded is not retried"
        calls_before = SCRIPTED_CALLS["support"]
        world.service.retry(TENANT, execution_id)
        execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    step = world.service.list_steps(TENANT, execution_id)[0]
    assert (step.error or {}).get("type") == "BudgetExceeded"
    assert "110 tokens" in step.error["message"]
    assert SCRIPTED_CALLS["support"] == calls_before, "the retried step must not call the model past its budget"
    assert ai_tools.calls(execution_id, "lookup_order") == 1


def test_a_provider_error_falls_back_to_the_next_model(make_world: Callable[..., World], executions: list[str]) -> None:
    world = make_world()
    definition = agent_workflow("ai-fallback", [{"error": "503 overloaded"}], fallbacks=["fake:backup"], tools=[])
    definition["models"]["backup"] = {"script": [{"content": "answered by the backup"}]}
    world.apply(definition)
    with world.worker():
        execution_id = world.start("ai-fallback", {"order": "A1"})
        executions.append(execution_id)
        execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {"answer": "answered by the backup"}
    # per-model metrics: the failed call of the primary, the answer of the fallback with its tokens
    labels = {"workflow": "ai-fallback", "step": "agent"}
    failed = REGISTRY.get_sample_value(
        "conveyor_model_calls_total", labels | {"model": "fake:support", "outcome": "ScriptedProviderError"}
    )
    answered = REGISTRY.get_sample_value(
        "conveyor_model_calls_total", labels | {"model": "fake:backup", "outcome": "ok"}
    )
    tokens = REGISTRY.get_sample_value(
        "conveyor_model_tokens_total", labels | {"model": "fake:backup", "direction": "output"}
    )
    assert (failed, answered, tokens) == (1.0, 1.0, 4.0)


def _wait_step(world: World, execution_id: str, status: StepStatus, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = world.service.list_steps(TENANT, execution_id)[0]
        if step.status is status:
            return step
        assert step.status not in (StepStatus.FAILED, StepStatus.SUCCEEDED), step.error
        time.sleep(0.05)
    raise AssertionError(f"step not {status} after {timeout}s")


def test_the_execution_budget_counts_every_ai_step_and_its_usage_is_readable_in_cel(
    make_world: Callable[..., World], executions: list[str]
) -> None:
    script = [{"content": "first answer", "usage": {"input": 40, "output": 30}}]
    world = make_world()
    definition = agent_workflow("ai-execution-budget", script, tools=[])
    definition["budget"] = {"tokens": 100}
    definition["steps"].append(
        {"id": "second", "type": "ai.agent", "needs": ["agent"], "with": definition["steps"][0]["with"]}
    )
    definition["outputs"] = {"tokens": "execution.usage.total_tokens"}
    measured = dict(definition, name="ai-usage-in-cel", budget={"tokens": 1000})
    world.apply(definition)
    world.apply(measured)
    with world.worker():
        execution_id = world.start("ai-execution-budget", {"order": "A1"})
        executions.append(execution_id)
        over = world.wait(execution_id)
        within_id = world.start("ai-usage-in-cel", {"order": "A1"})
        executions.append(within_id)
        within = world.wait(within_id)
    assert over.status is ExecutionStatus.FAILED
    steps = {s.key: s for s in world.service.list_steps(TENANT, execution_id)}
    assert steps["agent"].status is StepStatus.SUCCEEDED
    assert (steps["second"].error or {}).get("type") == "BudgetExceeded"
    assert "the execution used 140 tokens" in steps["second"].error["message"]
    assert set(over.usage or {}) == {"agent", "second"}
    assert within.status is ExecutionStatus.SUCCEEDED, within.error
    assert within.output == {"tokens": 140}
    succeeded = [e for e in world.service.events_after(TENANT, within_id, None) if e.type == "step.succeeded"]
    assert [e.data["usage"]["total_tokens"] for e in succeeded] == [70, 70]


def test_cancelling_the_execution_stops_the_agent_in_the_middle_of_a_tool(
    make_world: Callable[..., World], executions: list[str]
) -> None:
    script = [
        {"tool_calls": [{"name": "slow_lookup", "args": {"order_id": "A1"}}]},
        {"tool_calls": [{"name": "refund", "args": {"order_id": "A1", "amount": 42}}]},
        {"content": "never"},
    ]
    world = make_world(cancel_check_seconds=0.2)
    world.apply(agent_workflow("ai-cancel", script, tools=[f"{TOOLS}.slow_lookup", f"{TOOLS}.refund"]))
    with world.worker():
        execution_id = world.start("ai-cancel", {"order": "A1"})
        executions.append(execution_id)
        deadline = time.monotonic() + 60
        while ai_tools.calls(execution_id, "slow_lookup") == 0:
            assert time.monotonic() < deadline, "the slow tool never started"
            time.sleep(0.05)
        calls_before = SCRIPTED_CALLS["support"]
        world.service.cancel(TENANT, execution_id)
        world.wait_handled(1, timeout=20)  # the attempt ends long before the tool's 30 s
    assert world.service.get_execution(TENANT, execution_id).status is ExecutionStatus.CANCELLED
    assert world.runner.outcomes["lease-lost"] == 1
    assert not ai_tools.finished(execution_id, "slow_lookup"), "the tool was stopped with the graph"
    assert ai_tools.calls(execution_id, "refund") == 0
    assert SCRIPTED_CALLS["support"] == calls_before, "no model call after the cancel"


def test_with_stream_the_tokens_go_to_the_live_stream_and_not_to_the_history(
    make_world: Callable[..., World], executions: list[str], redis_server_url: str
) -> None:
    from engine.adapters.events_redis import RedisEventLog

    answer = "Your kettle is on its way back to us and the refund follows."
    world = make_world()
    world.apply(agent_workflow("ai-stream", [{"content": answer}], tools=[], stream=True))
    with world.worker():
        execution_id = world.start("ai-stream", {"order": "A1"})
        executions.append(execution_id)
        execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    live = RedisEventLog.from_url(redis_server_url, maxlen=1000)
    tokens = [e.event for e in live.read(TENANT, execution_id, count=1000) if e.event.type == "step.tokens"]
    assert tokens and all(e.step_key == "agent" for e in tokens)
    assert "".join(e.data["text"] for e in tokens) == answer
    history = world.service.events_after(TENANT, execution_id, None)
    assert not [e for e in history if e.type == "step.tokens"], "tokens are never stored"
