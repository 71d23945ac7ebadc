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
        route(strategy="rules", routes=["a"], rules=[{"when": "true", "route": "a"}], half_life="1d"),
        route(strategy="bandit", routes=["a", "b"], half_life="0.5s"),
        route(strategy="bandit", routes=["a", "b"], half_life="soon"),
    ]
    for definition in bad:
        with pytest.raises(DefinitionInvalid):
            compile_workflow(definition)
    compile_workflow(route(strategy="bandit", routes=["a", "b"]))
    compile_workflow(route(strategy="bandit", routes=["a", "b"], half_life="7d"))


def test_decay_weighs_an_outcome_by_two_to_the_minus_its_age_in_half_lives() -> None:
    from engine.bandit import decay_scale, decayed

    half_life = 3600.0
    accumulators: dict[int, tuple[float, float]] = {}
    for at, successes, failures in ((0.0, 1.0, 0.0), (3600.0, 0.0, 1.0), (7200.0, 1.0, 0.0)):
        epoch, scale = decay_scale(1_700_000_000.0 + at, half_life)
        s, f = accumulators.get(epoch, (0.0, 0.0))
        accumulators[epoch] = (s + successes * scale, f + failures * scale)
    now = 1_700_000_000.0 + 7200.0
    assert decayed(accumulators, half_life, now) == pytest.approx((1.25, 0.5))
    assert decayed(accumulators, half_life, now + half_life) == pytest.approx((0.625, 0.25))


def test_decay_scales_stay_bounded_and_old_epochs_are_dropped() -> None:
    from engine.bandit import EPOCH_HALF_LIVES, decay_epoch, decay_scale, decayed

    half_life = 10.0
    for at in (0.0, 5.0, 639.9, 640.0, 1e9 + 3.3):
        epoch, scale = decay_scale(at, half_life)
        assert 1.0 <= scale < 2.0**EPOCH_HALF_LIVES
        assert epoch == decay_epoch(at, half_life)
    epoch, scale = decay_scale(0.0, half_life)
    assert decayed({epoch: (scale, 0.0)}, half_life, 2 * EPOCH_HALF_LIVES * half_life) == (0.0, 0.0)


def test_a_decaying_bandit_follows_a_change_that_an_undecayed_one_learns_slowly() -> None:
    from engine.bandit import decay_scale, decayed

    def run(half_life: float | None) -> int:
        world = random.Random(7)
        rates = {"a": 0.9, "b": 0.2}
        plain: dict[str, tuple[float, float]] = {"a": (0.0, 0.0), "b": (0.0, 0.0)}
        acc: dict[str, dict[int, tuple[float, float]]] = {"a": {}, "b": {}}
        picks = []
        for n in range(1200):
            now = n * 60.0
            if n == 1000:
                rates = {"a": 0.2, "b": 0.9}  # the world changes
            counts = plain if half_life is None else {arm: decayed(acc[arm], half_life, now) for arm in acc}
            draw = thompson(["a", "b"], counts, seed=f"d-{n}")
            won = world.random() < rates[draw.arm]
            s, f = plain[draw.arm]
            plain[draw.arm] = (s + won, f + (not won))
            if half_life is not None:
                epoch, scale = decay_scale(now, half_life)
                s, f = acc[draw.arm].get(epoch, (0.0, 0.0))
                acc[draw.arm][epoch] = (s + won * scale, f + (not won) * scale)
            picks.append(draw.arm)
        return picks[1000:1100].count("b")  # the first 100 decisions after the change

    decaying, undecayed = run(half_life=1800.0), run(half_life=None)
    assert decaying > undecayed, (decaying, undecayed)
    assert decaying >= 60, decaying
