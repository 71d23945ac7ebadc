"""Learning from routing decisions: bandit draws, rewards, and the current estimates.

Used by ``ai.route`` and ``switch`` (``strategy: bandit``), the ``ai.reward`` step, the API
(``POST /v1/executions/{id}/rewards``, GraphQL ``rewardDecision``) and the CLI; the counts
live behind the :class:`~engine.ports.DecisionStats` port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from engine.bandit import posterior, thompson
from engine.errors import InvalidRequest, Problem, StepFailure
from engine.ports import ArmOutcome, DecisionStats

if TYPE_CHECKING:
    from engine.steptypes.base import StepContext


def decide(
    ctx: StepContext, arms: Sequence[str], bandit: str, *, prior: float = 1.0, half_life: float | None = None
) -> dict[str, Any]:
    """Thompson-sample one of ``arms`` from ``bandit``'s counts (decayed with ``half_life``),
    seeded by the step's idempotency key: the decision a step records as its output."""
    if ctx.ports.decisions is None:
        raise StepFailure("no decision statistics are configured", retryable=False, error_type="AiUnavailable")
    counts = ctx.ports.decisions.arm_counts(ctx.tenant, bandit, half_life=half_life, now=ctx.now())
    draw = thompson(arms, counts, ctx.idempotency_key, prior=prior)
    best = "explored" if draw.explored else "the best posterior mean won"
    decision = {
        "route": draw.arm,
        "rationale": f"Thompson sample {draw.samples[draw.arm]:.3f}: {best}",
        "bandit": bandit,
        **draw.as_dict(),
    }
    if half_life is not None:
        decision["half_life"] = half_life
    return decision


def reward_decision(
    stats: DecisionStats, tenant: str, execution_id: str, marker: str, decision: Any, reward: float, at: float
) -> bool:
    """Count ``reward`` (0..1) for a bandit ``decision`` (the output of an ``ai.route`` or
    ``switch`` step with strategy ``bandit``), exactly once per ``marker`` in the execution;
    whether this call counted it. The marker and the counts commit together, so a crash
    between them cannot lose the reward, and a retry after one cannot count it twice."""
    if not isinstance(decision, Mapping) or not isinstance(decision.get("bandit"), str):
        raise InvalidRequest(
            "not a bandit decision",
            [Problem("decision", "expected the output of an ai.route or switch step with strategy 'bandit'")],
        )
    if not 0 <= reward <= 1:
        raise InvalidRequest("reward out of range", [Problem("reward", f"{reward} is not between 0 and 1")])
    half_life = decision.get("half_life")
    outcome = ArmOutcome(
        tenant=tenant,
        execution_id=execution_id,
        marker=marker,
        bandit=decision["bandit"],
        arm=str(decision["route"]),
        successes=reward,
        failures=1 - reward,
        at=at,
        half_life=float(half_life) if isinstance(half_life, int | float) else None,
    )
    return stats.record_outcome(outcome)


def estimates(
    stats: DecisionStats,
    tenant: str,
    bandit: str,
    prior: float = 1.0,
    *,
    half_life: float | None = None,
    now: float = 0.0,
) -> dict[str, Any]:
    """Every arm's counts (decayed to ``now`` with ``half_life``) and Beta posterior (mean =
    estimated success rate)."""
    arms = {
        arm: {"successes": successes, "failures": failures, **posterior(successes, failures, prior)}
        for arm, (successes, failures) in stats.arm_counts(tenant, bandit, half_life=half_life, now=now).items()
    }
    return {"bandit": bandit, "half_life": half_life, "arms": arms}
