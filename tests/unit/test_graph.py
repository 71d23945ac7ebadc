"""Mermaid rendering of compiled workflows."""

from __future__ import annotations

from typing import Any

from engine.compile import compile_workflow
from engine.graph import to_mermaid


def mermaid(*steps: dict[str, Any]) -> str:
    return to_mermaid(compile_workflow({"name": "wf", "steps": list(steps)}))


def test_full_diagram() -> None:
    text = mermaid(
        {"id": "fetch", "type": "transform", "with": {"value": {"items": [1, 2]}}},
        {"id": "route", "type": "switch", "needs": ["fetch"], "with": {"cases": [{"when": "true"}]}},
        {"id": "charge", "type": "transform", "needs": ["route"], "when": 'steps.route.output.value == "a"',
         "with": {"value": 1}},
        {"id": "pause", "type": "wait", "needs": ["route"], "with": {"duration": "1h"}},
        {"id": "ship", "type": "transform", "needs": ["charge", "pause"], "foreach": "steps.fetch.output.items",
         "with": {"value": "${item}"}},
        {"id": "stop", "type": "fail", "needs": ["ship"], "with": {"message": "no"}},
    )  # fmt: skip
    assert text == (
        "flowchart TD\n"
        '    fetch["fetch<br/>transform"]\n'
        '    route{"route<br/>switch"}\n'
        '    charge["charge<br/>transform"]\n'
        '    pause(["pause<br/>wait"])\n'
        '    ship["ship<br/>transform<br/>foreach steps.fetch.output.items"]\n'
        '    stop[/"stop<br/>fail"\\]\n'
        "    fetch --> route\n"
        '    route -.->|"steps.route.output.value == #quot;a#quot;"| charge\n'
        "    route --> pause\n"
        "    charge --> ship\n"
        "    pause --> ship\n"
        "    ship --> stop\n"
        "    classDef foreach stroke-width:3px,stroke-dasharray:6 3\n"
        "    class ship foreach\n"
    )


def test_condition_on_a_root_goes_in_its_label_and_is_escaped() -> None:
    text = mermaid({"id": "a", "type": "transform", "when": "input.n > 1 || input.tag == '#x'", "with": {"value": 1}})
    assert "    a[\"a<br/>transform<br/>when input.n #gt; 1 #124;#124; input.tag == '#35;x'\"]" in text


def test_long_conditions_are_shortened() -> None:
    condition = " && ".join(["input.flag"] * 20)
    text = mermaid(
        {"id": "a", "type": "transform", "with": {"value": 1}},
        {"id": "b", "type": "transform", "needs": ["a"], "when": condition, "with": {"value": 1}},
    )
    edge = next(line for line in text.splitlines() if "-.->" in line)
    assert edge.endswith('…"| b')
    assert len(edge) < 100


def test_reserved_words_get_prefixed_node_ids() -> None:
    text = mermaid(
        {"id": "end", "type": "transform", "with": {"value": 1}},
        {"id": "next", "type": "transform", "needs": ["end"], "with": {"value": 1}},
    )
    assert '    step_end["end<br/>transform"]' in text
    assert "    step_end --> next" in text


def test_no_foreach_no_class_lines() -> None:
    assert "classDef" not in mermaid({"id": "a", "type": "transform", "with": {"value": 1}})
