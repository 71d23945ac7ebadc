"""``type: ai.reward``: teach a bandit how its decision turned out.

```yaml
- id: learn
  type: ai.reward
  needs: [ship]
  with:
    decision: "${steps.route.output}"          # an ai.route or switch decision (strategy: bandit)
    reward: "${steps.ship.status == 'SUCCEEDED' ? 1.0 : 0.0}"
```

``reward`` is between 0 and 1: it adds ``reward`` successes and ``1 - reward`` failures to the
chosen route's counts. Counted exactly once per step of an execution, however often the
step runs: its marker and the counts are committed together.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from engine.decisions import reward_decision
from engine.errors import InvalidRequest, StepFailure
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded


class RewardConfig(StepConfig):
    decision: dict[str, Any]
    reward: float = Field(ge=0, le=1)


class RewardStep(BaseStepType):
    name: ClassVar[str] = "ai.reward"
    Config: ClassVar[type[StepConfig]] = RewardConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, RewardConfig)
        if ctx.ports.decisions is None:
            raise StepFailure("no decision statistics are configured", retryable=False, error_type="AiUnavailable")
        try:
            counted = reward_decision(
                ctx.ports.decisions,
                ctx.tenant,
                ctx.execution_id,
                f"reward:{ctx.step_key}",
                config.decision,
                config.reward,
                ctx.now(),
            )
        except InvalidRequest as exc:
            raise StepFailure(exc.message, retryable=False, error_type="ConfigInvalid") from None
        route = config.decision.get("route")
        return Succeeded(
            {"bandit": config.decision["bandit"], "route": route, "reward": config.reward, "counted": counted}
        )


register(RewardStep())
