"""Bad input is refused with an error naming the place, and nothing is half-written."""

from __future__ import annotations

import pytest

from engine.errors import DefinitionInvalid, InputInvalid, PayloadTooLarge
from engine.states import ExecutionStatus, StepStatus
from tests.harness import Harness

F = "tests.unit.fixtures.corefns"


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path, max_payload_bytes=10_000)


BAD_DEFINITIONS = [
    ("name: x\nsteps:\n  - id: a\n    type: task\n   with: {}\n", "line 5"),
    ({"name": "x", "steps": [{"id": "a", "type": "teleport"}]}, "steps[0].type"),
    (
        {"name": "x", "steps": [
            {"id": "a", "type": "transform", "needs": ["b"], "with": {"value": 1}},
            {"id": "b", "type": "transform", "needs": ["a"], "with": {"value": 1}},
        ]},
        "a -> b -> a",
    ),
    ({"name": "x", "steps": [{"id": "a", "type": "transform", "when": "input.x >", "with": {"value": 1}}]},
     "steps[0].when"),
    ({"name": "x", "steps": [{"id": "a", "type": "transform", "needs": ["fetc"], "with": {"value": 1}}]},
     "steps[0].needs[0]"),
    ({"name": "x", "steps": [{"id": "a", "type": "wait", "with": {"duration": "soon"}}]}, "steps[0].with.duration"),
]


@pytest.mark.parametrize(("definition", "place"), BAD_DEFINITIONS)
def test_bad_definition_names_the_place_and_saves_nothing(h, definition, place):
    with pytest.raises(DefinitionInvalid) as info:
        h.service.apply_workflow("t1", definition)
    assert place in str(info.value)
    assert h.service.list_workflows("t1").items == []


def test_input_failing_the_schema_names_the_field_and_starts_nothing(h):
    h.apply({"name": "typed", "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
             "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
    with pytest.raises(InputInvalid) as info:
        h.service.start("t1", "typed", {"n": "three"})
    assert "input.n" in str(info.value)
    assert h.service.list_executions("t1").items == []


def test_oversized_input_starts_nothing(h):
    h.apply({"name": "big", "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
    with pytest.raises(PayloadTooLarge):
        h.service.start("t1", "big", {"blob": "x" * 20_000})
    assert h.service.list_executions("t1").items == []


def test_oversized_step_output_fails_the_step_cleanly(h):
    h.apply({"name": "huge", "steps": [
        {"id": "a", "type": "task", "retry": {"max_attempts": 3},
         "with": {"function": f"{F}.huge", "args": {"size": 20_000}}},
    ]})
    execution_id = h.start("huge")
    h.drain()
    step = h.steps(execution_id)["a"]
    assert step.status is StepStatus.FAILED and step.attempt == 1
    assert step.error["type"] == "PayloadTooLarge"
    assert step.output is None
    assert h.execution(execution_id).status is ExecutionStatus.FAILED
