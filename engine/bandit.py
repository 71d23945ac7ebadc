"""Beta-Bernoulli Thompson sampling over declared alternatives, on the standard library.

Each arm's success probability has a Beta(prior + successes, prior + failures) posterior;
a decision draws one sample per arm and takes the largest. The draw is seeded from a
string (the step's idempotency key), so deciding again for the same step (a redelivery, a
retry) picks the same arm from the same counts.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Draw:
    """One decision: the arm, every arm's sample and posterior, and whether it explored
    (picked an arm other than the one with the best posterior mean)."""

    arm: str
    samples: dict[str, float]
    posteriors: dict[str, dict[str, float]]
    explored: bool

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "posteriors": self.posteriors, "explored": self.explored}


def posterior(successes: float, failures: float, prior: float = 1.0) -> dict[str, float]:
    """Beta posterior parameters and mean of an arm."""
    alpha, beta = prior + successes, prior + failures
    return {"alpha": alpha, "beta": beta, "mean": alpha / (alpha + beta)}


def thompson(arms: Sequence[str], counts: Mapping[str, tuple[float, float]], seed: str, prior: float = 1.0) -> Draw:
    """Pick one of ``arms`` by Thompson sampling, deterministically for ``seed``."""
    rng = random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))  # noqa: S311
    posteriors = {arm: posterior(*counts.get(arm, (0.0, 0.0)), prior=prior) for arm in arms}
    samples = {arm: rng.betavariate(p["alpha"], p["beta"]) for arm, p in posteriors.items()}
    chosen = max(arms, key=lambda arm: samples[arm])
    best = max(arms, key=lambda arm: posteriors[arm]["mean"])
    rounded = {arm: round(value, 6) for arm, value in samples.items()}
    return Draw(chosen, rounded, posteriors, explored=posteriors[chosen]["mean"] < posteriors[best]["mean"])
