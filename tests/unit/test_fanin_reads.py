"""Which sibling records a foreach item's completion reads (the pure part of fan-in)."""

from __future__ import annotations

from engine.compile import compile_workflow
from engine.orchestration.progress import later_items


def foreach(concurrency: int | None):
    step = {"id": "each", "type": "transform", "foreach": "input.items", "with": {"value": 1}}
    if concurrency is not None:
        step["concurrency"] = concurrency
    return compile_workflow({"name": "fan", "steps": [step]})


def test_an_item_reads_its_successor_and_a_neighbor_created_with_the_foreach() -> None:
    compiled = foreach(3)
    assert later_items(compiled, "each", 0) == ["each[3]", "each[1]"]
    assert later_items(compiled, "each", 1) == ["each[4]", "each[2]"]


def test_a_neighbor_created_by_another_item_is_not_read() -> None:
    # each[3] is created by each[0]'s completion: reading it from each[2] could close a cycle.
    compiled = foreach(3)
    assert later_items(compiled, "each", 2) == ["each[5]"]
    assert later_items(compiled, "each", 7) == ["each[10]"]


def test_the_default_concurrency_reads_the_next_item() -> None:
    assert later_items(foreach(None), "each", 41) == ["each[141]", "each[42]"]
