"""The pure step types: transform, switch and fail (no services, no worker)."""

from __future__ import annotations

from typing import Any

import pytest

from engine import steptypes
from engine.errors import ExpressionError, StepFailure
from engine.expressions import compile_expression
from engine.steptypes.base import StepConfig, StepContext, Succeeded


def context(variables: dict[str, Any] | None = None) -> StepContext:
    bound = variables or {}
    return StepContext(
        tenant="t",
        execution_id="ex-1",
        step_key="s",
        step_id="s",
        attempt=1,
        input=bound.get("input"),
        evaluate=lambda source: compile_expression(source).evaluate(bound),
    )


def config(type_name: str, data: dict[str, Any]) -> StepConfig:
    step_type = steptypes.get(type_name)
    assert step_type is not None
    return step_type.Config.model_validate(data)


async def run(type_name: str, data: dict[str, Any], variables: dict[str, Any] | None = None) -> Any:
    step_type = steptypes.get(type_name)
    assert step_type is not None
    return await step_type.run(context(variables), config(type_name, data))


def test_registered() -> None:
    assert {"transform", "switch", "fail"} <= set(steptypes.names())


# --------------------------------------------------------------------------- transform


async def test_transform_outputs_its_value() -> None:
    assert await run("transform", {"value": {"a": [1, 2]}}) == Succeeded({"a": [1, 2]})
    assert await run("transform", {"value": None}) == Succeeded(None)


def test_transform_requires_value() -> None:
    with pytest.raises(ValueError, match="value"):
        config("transform", {})


# --------------------------------------------------------------------------- switch

CASES = {"cases": [{"when": "input.n > 10", "value": "big"}, {"when": "input.n > 5", "value": "medium"}]}


@pytest.mark.parametrize(("n", "expected"), [(11, {"value": "big", "case": 0}), (7, {"value": "medium", "case": 1})])
async def test_switch_first_match_wins(n: int, expected: dict[str, Any]) -> None:
    assert await run("switch", CASES, {"input": {"n": n}}) == Succeeded(expected)


async def test_switch_default() -> None:
    outcome = await run("switch", {**CASES, "default": "small"}, {"input": {"n": 1}})
    assert outcome == Succeeded({"value": "small", "case": None})


async def test_switch_null_default_is_a_default() -> None:
    outcome = await run("switch", {**CASES, "default": None}, {"input": {"n": 1}})
    assert outcome == Succeeded({"value": None, "case": None})


async def test_switch_no_match_fails_for_good() -> None:
    with pytest.raises(StepFailure) as caught:
        await run("switch", CASES, {"input": {"n": 1}})
    assert caught.value.message == "no case matched"
    assert caught.value.retryable is False


async def test_switch_non_boolean_condition() -> None:
    with pytest.raises(StepFailure) as caught:
        await run("switch", {"cases": [{"when": "input.n", "value": 1}]}, {"input": {"n": 1}})
    assert caught.value.message == "cases[0].when must be a boolean but 'input.n' returned an integer"
    assert not caught.value.retryable


async def test_switch_evaluation_error() -> None:
    with pytest.raises(StepFailure) as caught:
        await run("switch", {"cases": [{"when": "input.missing", "value": 1}]}, {"input": {}})
    assert caught.value.message == "cases[0].when: expression 'input.missing' failed: no such key: 'missing'"
    assert caught.value.error_type == "ExpressionError"
    assert isinstance(caught.value.__cause__, ExpressionError)


def test_switch_needs_a_case() -> None:
    with pytest.raises(ValueError, match="at least 1 item"):
        config("switch", {"cases": []})


def test_switch_check() -> None:
    step_type = steptypes.get("switch")
    assert step_type is not None
    checked = config("switch", {"cases": [{"when": "true"}, {"when": "input.n >"}, {"when": "${input.ok}"}]})
    problems = [str(p) for p in step_type.check(checked, "steps[3].with")]
    assert problems[0].startswith("steps[3].with.cases[1].when: cannot compile 'input.n >'")
    assert problems[1] == "steps[3].with.cases[2].when: write the CEL condition bare, without '${...}'"
    assert len(problems) == 2


# --------------------------------------------------------------------------- fail


async def test_fail_raises_a_final_failure() -> None:
    with pytest.raises(StepFailure) as caught:
        await run("fail", {"message": "order 7 is fraudulent", "error_type": "Fraud"})
    assert (caught.value.message, caught.value.retryable, caught.value.error_type) == (
        "order 7 is fraudulent",
        False,
        "Fraud",
    )


async def test_fail_default_error_type() -> None:
    with pytest.raises(StepFailure) as caught:
        await run("fail", {"message": "stop"})
    assert caught.value.error_type == "WorkflowFailed"


def test_fail_requires_a_message() -> None:
    with pytest.raises(ValueError, match="message"):
        config("fail", {"error_type": "X"})
