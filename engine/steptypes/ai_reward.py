"""``type: ai.reward``: teach a bandit how its decision turned out.

```yaml
- id: learn
  type: ai.reward
  needs: [ship]
  with:
    decision: "${steps.route.output}"          # the ai.route (strategy: bandit) decision
    reward: "${steps.ship.status == 'SUCCEEDED' ? 1.0 : 0.0}"
```

``reward`` is between 0 and 1: it adds ``reward`` successes and ``1 - reward`` failures to the
chosen route's counts. Counted at most once per step of an execution, however often the
step runs (a marker is set before the count).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from engine.errors import StepFailure
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
        bandit, route = config.decision.get("bandit"), config.decision.get("route")
        if not isinstance(bandit, str) or not isinstance(route, str):
            raise StepFailure(
                "'decision' must be the output of an ai.route step with strategy 'bandit'",
                retryable=False,
                error_type="ConfigInvalid",
            )
        if ctx.ports.decisions is None:
            raise StepFailure("no decision statistics are configured", retryable=False, error_type="AiUnavailable")
        counted = ctx.ports.decisions.mark_once(ctx.tenant, ctx.execution_id, f"reward:{ctx.step_key}")
        if counted:
            ctx.ports.decisions.add_arm_outcome(ctx.tenant, bandit, route, config.reward, 1 - config.reward)
        return Succeeded({"bandit": bandit, "route": route, "reward": config.reward, "counted": counted})


register(RewardStep())
