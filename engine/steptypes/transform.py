"""``type: transform``: shape data with templates, no side effects.

``with: {value: <any JSON>}``; strings inside may hold ``${...}`` templates. The worker
renders templates (against ``input``, ``steps``, ``item``, ``index``, ``execution``) before
calling the handler, so the step's output is simply the rendered value.
"""

from __future__ import annotations

from typing import Any, ClassVar

from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded


class TransformConfig(StepConfig):
    """``value`` is required (``null`` is allowed) so a forgotten ``value:`` key is caught at save time."""

    value: Any


class TransformStep(BaseStepType):
    """Output the (already rendered) ``value``."""

    name: ClassVar[str] = "transform"
    Config: ClassVar[type[StepConfig]] = TransformConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, TransformConfig)
        return Succeeded(config.value)


register(TransformStep())
