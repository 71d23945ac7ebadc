"""``BanditEstimates``: what an ``ai.route`` bandit has learned, per route."""

from __future__ import annotations

from typing import Any

import strawberry


@strawberry.type(description="One route of a bandit: its counts and Beta posterior")
class ArmEstimate:
    route: str
    successes: float
    failures: float
    alpha: float
    beta: float
    mean: float = strawberry.field(description="Estimated success rate (posterior mean)")


@strawberry.type(description="What the bandit of an ai.route or switch step (strategy: bandit) has learned")
class BanditEstimates:
    bandit: str
    half_life: float | None = strawberry.field(description="Seconds; counts are decayed to now when set")
    arms: list[ArmEstimate]

    @classmethod
    def from_estimates(cls, found: dict[str, Any]) -> BanditEstimates:
        arms = [ArmEstimate(route=route, **arm) for route, arm in found["arms"].items()]
        return cls(bandit=found["bandit"], half_life=found.get("half_life"), arms=arms)
