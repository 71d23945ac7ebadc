"""Beta-Bernoulli Thompson sampling over declared alternatives, on the standard library.

Each arm's success probability has a Beta(prior + successes, prior + failures) posterior;
a decision draws one sample per arm and takes the largest. The draw is seeded from a
string (the step's idempotency key), so deciding again for the same step (a redelivery, a
retry) picks the same arm from the same counts.
"""

from __future__ import annotations

import hashlib
import math
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


# --------------------------------------------------------------------------- decay
#
# With a half-life h, an outcome recorded at time t weighs 2 ** (-(now - t) / h) at time now:
# a success from one half-life ago counts half, from two a quarter. The posterior becomes
# Beta(prior + S(now), prior + F(now)) with S(now) = sum of s_i * 2 ** (-(now - t_i) / h).
#
# Counts are store increments, which cannot be multiplied down as time passes. So each is
# stored already scaled to a fixed anchor: an outcome adds s * 2 ** ((t - T_e) / h) to the
# accumulator of its epoch e = floor(t / (EPOCH_HALF_LIVES * h)), anchored at
# T_e = e * EPOCH_HALF_LIVES * h (so the scale stays between 1 and 2 ** EPOCH_HALF_LIVES).
# Reading multiplies an accumulator by 2 ** ((T_e - now) / h), which gives exactly S(now)
# for its outcomes. Only the current and the previous epoch are read: an outcome older than
# that weighs less than 2 ** -EPOCH_HALF_LIVES.

#: Half-lives per accumulator epoch.
EPOCH_HALF_LIVES = 64


def decay_epoch(at: float, half_life: float) -> int:
    return math.floor(at / (EPOCH_HALF_LIVES * half_life))


def decay_scale(at: float, half_life: float) -> tuple[int, float]:
    """The epoch an outcome at ``at`` is added to, and the factor its counts are scaled by."""
    epoch = decay_epoch(at, half_life)
    return epoch, 2.0 ** ((at - epoch * EPOCH_HALF_LIVES * half_life) / half_life)


def decayed(accumulators: Mapping[int, tuple[float, float]], half_life: float, now: float) -> tuple[float, float]:
    """Decayed (successes, failures) at ``now`` from an arm's per-epoch accumulators."""
    current = decay_epoch(now, half_life)
    successes = failures = 0.0
    for epoch in (current - 1, current):
        stored = accumulators.get(epoch)
        if stored is not None:
            factor = 2.0 ** ((epoch * EPOCH_HALF_LIVES * half_life - now) / half_life)
            successes += stored[0] * factor
            failures += stored[1] * factor
    return successes, failures


def decay_epochs(now: float, half_life: float) -> tuple[int, int]:
    """The epochs :func:`decayed` reads at ``now``: the previous and the current."""
    current = decay_epoch(now, half_life)
    return current - 1, current
