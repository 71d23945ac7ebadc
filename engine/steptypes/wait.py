"""``type: wait``: a durable timer, for a duration or until a timestamp.

The timer lives in the store (the step waits in WAITING with ``wake_at``), so it survives
restarts; the broker only ever carries a countdown of a few seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import model_validator

from engine.model import Duration
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Wait


class WaitConfig(StepConfig):
    duration: Duration | None = None
    until: datetime | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> WaitConfig:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of 'duration' or 'until'")
        return self


class WaitStep(BaseStepType):
    name: ClassVar[str] = "wait"
    Config: ClassVar[type[StepConfig]] = WaitConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, WaitConfig)
        if config.until is not None:
            return Wait(until=config.until.timestamp())
        assert config.duration is not None
        return Wait(until=ctx.now() + config.duration)


register(WaitStep())
