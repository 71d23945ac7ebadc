"""Learning from routing decisions: rewards for bandit decisions and the current estimates.

Used by the ``ai.reward`` step, the API (``POST /v1/executions/{id}/rewards``) and the CLI;
the counts live in the store (:class:`~engine.ports.DecisionStats`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.bandit import posterior
from engine.errors import InvalidRequest, Problem
from engine.ports import DecisionStats


def reward_decision(
    stats: DecisionStats, tenant: str, execution_id: str, marker: str, decision: Any, reward: float
) -> bool:
    """Count ``reward`` (0..1) for a bandit ``decision`` (an ``ai.route`` output), at most once per
    ``marker`` in the execution; whether this call counted it.

    The marker is written before the count: a crash in between loses the reward rather than
    counting it twice.
    """
    if not isinstance(decision, Mapping) or not isinstance(decision.get("bandit"), str):
        raise InvalidRequest(
            "not a bandit decision",
            [Problem("decision", "expected the output of an ai.route step with strategy 'bandit'")],
        )
    if not 0 <= reward <= 1:
        raise InvalidRequest("reward out of range", [Problem("reward", f"{reward} is not between 0 and 1")])
    if not stats.mark_once(tenant, execution_id, marker):
        return False
    stats.add_arm_outcome(tenant, decision["bandit"], str(decision["route"]), reward, 1 - reward)
    return True


def estimates(stats: DecisionStats, tenant: str, bandit: str, prior: float = 1.0) -> dict[str, Any]:
    """Every arm's counts and Beta posterior (mean = estimated success rate)."""
    arms = {
        arm: {"successes": successes, "failures": failures, **posterior(successes, failures, prior)}
        for arm, (successes, failures) in stats.arm_counts(tenant, bandit).items()
    }
    return {"bandit": bandit, "arms": arms}
