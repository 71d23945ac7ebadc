"""Thompson sampling: it learns the better arm, and the same seed always picks the same arm."""

from __future__ import annotations

import random

import pytest

from engine.bandit import posterior, thompson
from engine.errors import DefinitionInvalid


def test_a_seeded_simulation_picks_the_better_arm_in_most_of_the_last_100_decisions() -> None:
    success = {"good": 0.9, "fair": 0.6}
    counts = {arm: (0.0, 0.0) for arm in success}
    world = random.Random(20240607)
    picks = []
    for decision in range(500):
        draw = thompson(["fair", "good"], counts, seed=f"sim/execution-{decision}/route")
        won = world.random() < success[draw.arm]
        wins, losses = counts[draw.arm]
        counts[draw.arm] = (wins + won, losses + (not won))
        picks.append(draw.arm)
    assert picks[-100:].count("good") >= 80, picks[-100:].count("good")
    assert sum(counts["good"]) > sum(counts["fair"])


def test_the_same_decision_drawn_again_picks_the_same_arm() -> None:
    counts = {"a": (3.0, 2.0), "b": (2.0, 3.0), "c": (0.0, 0.0)}
    first = thompson(["a", "b", "c"], counts, seed="exec-1/route")
    for _ in range(5):
        assert thompson(["a", "b", "c"], counts, seed="exec-1/route") == first
    others = {thompson(["a", "b", "c"], counts, seed=f"exec-{n}/route").arm for n in range(50)}
    assert len(others) > 1, "different decisions draw differently"


def test_the_decision_records_samples_posteriors_and_exploration() -> None:
    draw = thompson(["a", "b"], {"a": (90.0, 10.0), "b": (1.0, 1.0)}, seed="s")
    assert draw.posteriors["a"] == posterior(90, 10) == {"alpha": 91.0, "beta": 11.0, "mean": 91 / 102}
    assert set(draw.samples) == {"a", "b"}
    assert draw.explored == (draw.arm == "b")


def test_route_configs_are_checked_when_the_workflow_is_saved() -> None:
    from engine.compile import compile_workflow

    def route(**config: object) -> dict[str, object]:
        return {"name": "r", "steps": [{"id": "route", "type": "ai.route", "with": config}]}

    bad = [
        route(strategy="rules", routes=["a"], rules=[{"when": "input.x >", "route": "a"}]),
        route(strategy="rules", routes=["a"], rules=[{"when": "true", "route": "z"}]),
        route(strategy="llm", routes=["a", "b"], model="fake:m", prompt="p"),  # no default
        route(strategy="bandit", routes=["a", "a"]),
    ]
    for definition in bad:
        with pytest.raises(DefinitionInvalid):
            compile_workflow(definition)
    compile_workflow(route(strategy="bandit", routes=["a", "b"]))
