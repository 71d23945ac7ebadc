"""``type: wait``: a durable timer, for a duration or until a timestamp, or until a signal.

The timer lives in the store (the step waits in WAITING with ``wake_at``), so it survives
restarts; the broker only ever carries a countdown of a few seconds. A signal ends the wait
early with its payload as the step's output; an optional ``match`` (CEL over ``signal``,
``input`` and ``execution``) must hold for the signal, or it is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field, model_validator

from engine.errors import Problem
from engine.model import Duration
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Wait, check_condition


class WaitConfig(StepConfig):
    duration: Duration | None = None
    until: datetime | None = None
    match: str | None = Field(default=None, min_length=1, max_length=4000)

    @model_validator(mode="after")
    def _exactly_one(self) -> WaitConfig:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of 'duration' or 'until'")
        return self


#: What a ``wait`` step's ``match`` may read.
MATCH_VARIABLES = frozenset({"signal", "input", "execution"})


class WaitStep(BaseStepType):
    name: ClassVar[str] = "wait"
    Config: ClassVar[type[StepConfig]] = WaitConfig
    may_wait: ClassVar[bool] = True

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        assert isinstance(config, WaitConfig)
        return check_condition(config.match, f"{path}.match", MATCH_VARIABLES)

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, WaitConfig)
        if config.until is not None:
            return Wait(until=config.until.timestamp(), match=config.match)
        assert config.duration is not None
        return Wait(until=ctx.now() + config.duration, match=config.match)


register(WaitStep())
