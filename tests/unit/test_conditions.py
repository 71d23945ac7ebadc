"""A ``when`` must give a boolean: refused when saved if its value is known then."""

from __future__ import annotations

import pytest

from engine.compile import compile_workflow
from engine.errors import DefinitionInvalid


def workflow(when: str) -> dict:
    return {"name": "w", "steps": [{"id": "a", "type": "transform", "when": when, "with": {"value": 1}}]}


@pytest.mark.parametrize(("when", "got"), [("'yes'", "a string"), ("1 + 1", "an integer"), ("[true]", "a list")])
def test_a_constant_when_that_is_not_a_boolean_is_refused_when_saved(when, got):
    with pytest.raises(DefinitionInvalid) as caught:
        compile_workflow(workflow(when))
    [problem] = caught.value.problems
    assert problem.path == "steps[0].when"
    assert problem.message == f"expression {when!r} must be a boolean but returned {got}"


@pytest.mark.parametrize("when", ["true", "1 < 2", "input.flag", "size(input.items) > 0"])
def test_a_boolean_or_not_yet_known_when_is_accepted(when):
    assert compile_workflow(workflow(when)).when["a"].source == when
