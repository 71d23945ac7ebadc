"""``type: fail``: end the execution with a failure on purpose (e.g. after a switch)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from engine.errors import StepFailure
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome


class FailConfig(StepConfig):
    """``message`` may contain templates; ``error_type`` names the failure for callers and retries."""

    message: str = Field(min_length=1)
    error_type: str = Field(default="WorkflowFailed", pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")


class FailStep(BaseStepType):
    """Always fails, never retried: retrying a deliberate failure cannot change its outcome."""

    name: ClassVar[str] = "fail"
    Config: ClassVar[type[StepConfig]] = FailConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, FailConfig)
        raise StepFailure(config.message, retryable=False, error_type=config.error_type)


register(FailStep())
