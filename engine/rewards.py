"""Rewards and estimates of bandit routing decisions (``ai.route`` and ``switch``, ``strategy: bandit``).

The use cases behind ``POST /v1/executions/{id}/rewards``, GraphQL ``rewardDecision``, the
decision estimates route and ``conveyor decisions``; the arithmetic is in :mod:`engine.decisions`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import decisions
from engine.durations import parse_duration
from engine.errors import ConveyorError, NotFound
from engine.ports import DecisionStats
from engine.states import StepStatus

if TYPE_CHECKING:
    from engine.service import Service


class Rewards:
    """Counts rewards for the decisions steps made, and reads the bandits' estimates."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def _stats(self) -> DecisionStats:
        if self.service.decisions is None:
            raise ConveyorError("no decision statistics are configured in this process")
        return self.service.decisions

    def count(self, tenant: str, execution_id: str, step_key: str, reward: float) -> bool:
        """Count a reward (0..1) for the bandit decision step ``step_key`` made; exactly once per
        step and execution (``False``: it was counted before)."""
        service = self.service
        step = service.store.read(lambda reads: reads.get_steps(tenant, execution_id, [step_key])).get(step_key)
        if step is None or step.status is not StepStatus.SUCCEEDED:
            raise NotFound(f"no decision of step {step_key!r} in execution {execution_id!r}")
        marker = f"reward:{step_key}"
        stats = self._stats()
        return decisions.reward_decision(stats, tenant, execution_id, marker, step.output, reward, service.clock.now())

    def estimates(self, tenant: str, workflow: str, step_id: str) -> dict[str, Any]:
        """Counts and posteriors of every route (case) the bandit of step ``step_id`` has tried
        (an ``ai.route`` or ``switch`` step with strategy ``bandit``); decayed to now if it decays."""
        definition = self.service.get_workflow(tenant, workflow).definition
        step = next((s for s in definition.get("steps", []) if s.get("id") == step_id), None)
        config = (step or {}).get("with", {})
        if step is None or step.get("type") not in ("ai.route", "switch") or config.get("strategy") != "bandit":
            raise NotFound(f"workflow {workflow!r} has no ai.route or switch step {step_id!r} with strategy 'bandit'")
        half_life = config.get("half_life")
        return decisions.estimates(
            self._stats(),
            tenant,
            config.get("bandit") or f"{workflow}/{step_id}",
            prior=float(config.get("prior", 1.0)),
            half_life=parse_duration(half_life) if half_life is not None else None,
            now=self.service.clock.now(),
        )
