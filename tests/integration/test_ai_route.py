"""``ai.route`` and ``ai.reward`` in a real Celery worker: rules, a model with a fallback, a bandit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from engine.states import ExecutionStatus
from tests.integration.conftest import TENANT, World

pytestmark = pytest.mark.backend


def routed(world: World, definition: dict[str, Any], input: Any) -> tuple[Any, dict[str, Any]]:
    world.apply(definition)
    execution_id = world.start(definition["name"], input)
    execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    steps = {s.key: s for s in world.service.list_steps(TENANT, execution_id)}
    events = [e for e in world.service.events_after(TENANT, execution_id, None) if e.step_key == "route"]
    decision = steps["route"].output
    assert events[-1].type == "step.succeeded" and events[-1].data["decision"] == decision
    return execution, decision


def llm_route(name: str, answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "models": {"triage": {"script": [{"structured": answer}]}},
        "steps": [
            {
                "id": "route",
                "type": "ai.route",
                "with": {
                    "strategy": "llm",
                    "model": "fake:triage",
                    "prompt": "Classify the order ${input.order}",
                    "routes": ["standard", "fraud_review"],
                    "default": "fraud_review",
                    "min_confidence": 0.7,
                },
            }
        ],
    }


def test_routes_by_rules_by_a_model_and_by_the_fallback(make_world: Callable[..., World]) -> None:
    world = make_world()
    rules = {
        "name": "route-rules",
        "steps": [
            {
                "id": "route",
                "type": "ai.route",
                "with": {
                    "strategy": "rules",
                    "routes": ["small", "large"],
                    "rules": [{"when": "input.amount > 100", "route": "large"}],
                    "default": "small",
                },
            }
        ],
    }
    confident = {"route": "standard", "rationale": "known customer", "confidence": 0.9}
    with world.worker():
        _, decision = routed(world, rules, {"amount": 500})
        assert (decision["route"], decision["rule"]) == ("large", 0)
        _, decision = routed(world, llm_route("route-llm", confident), {"order": "A1"})
        assert decision["route"] == "standard" and decision["fallback"] is False
        assert (decision["rationale"], decision["confidence"]) == ("known customer", 0.9)
        assert decision["usage"]["calls"] == 1
        invalid = {"route": "ship_it", "rationale": "?", "confidence": 0.99}
        _, decision = routed(world, llm_route("route-invalid", invalid), {"order": "A2"})
        assert decision["route"] == "fraud_review" and decision["fallback"] is True
        assert "'ship_it' is not a declared route" in decision["rationale"]
        unsure = {"route": "standard", "rationale": "hmm", "confidence": 0.3}
        _, decision = routed(world, llm_route("route-unsure", unsure), {"order": "A3"})
        assert decision["route"] == "fraud_review" and "below 0.7" in decision["rationale"]


BANDIT = {
    "name": "route-bandit",
    "steps": [
        {"id": "route", "type": "ai.route", "with": {"strategy": "bandit", "routes": ["fast", "careful"]}},
        {
            "id": "learn",
            "type": "ai.reward",
            "needs": ["route"],
            "with": {
                "decision": "${steps.route.output}",
                "reward": "${steps.route.output.route == 'careful' ? 1.0 : 0.0}",
            },
        },
    ],
}


def test_a_bandit_decision_is_recorded_and_its_reward_counted_once(make_world: Callable[..., World]) -> None:
    world = make_world()
    with world.worker():
        chosen = [routed(world, BANDIT, None)[1] for _ in range(6)]
    counts = world.decisions.arm_counts(TENANT, "route-bandit/route")
    careful = sum(1 for d in chosen if d["route"] == "careful")
    assert counts.get("careful", (0.0, 0.0)) == (float(careful), 0.0)
    assert counts.get("fast", (0.0, 0.0)) == (0.0, float(6 - careful))
    for decision in chosen:
        assert decision["bandit"] == "route-bandit/route"
        assert set(decision["samples"]) == set(decision["posteriors"]) == {"fast", "careful"}


def test_the_model_calls_of_an_llm_route_are_counted_in_prometheus(make_world: Callable[..., World]) -> None:
    """docs/ai.md: every model call of an AI step is a metric; those of `ai.route` (`llm`)
    were not counted (found from outside: only `ai.agent` calls showed on a worker's /metrics)."""
    world = make_world()
    definition = llm_route("route-metered", {"route": "standard", "rationale": "fine", "confidence": 0.9})
    definition["models"]["down"] = {"script": [{"error": "503 overloaded"}]}
    definition["steps"][0]["with"] |= {"model": "fake:down", "fallbacks": ["fake:triage"]}
    with world.worker():
        _, decision = routed(world, definition, {"order": "A1"})
    assert decision["route"] == "standard"
    labels = {"workflow": "route-metered", "step": "route"}
    failed = REGISTRY.get_sample_value(
        "conveyor_model_calls_total", labels | {"model": "fake:down", "outcome": "ScriptedProviderError"}
    )
    answered = REGISTRY.get_sample_value(
        "conveyor_model_calls_total", labels | {"model": "fake:triage", "outcome": "ok"}
    )
    tokens = REGISTRY.get_sample_value(
        "conveyor_model_tokens_total", labels | {"model": "fake:triage", "direction": "input"}
    )
    assert (failed, answered) == (1.0, 1.0)
    assert tokens is not None and tokens > 0
