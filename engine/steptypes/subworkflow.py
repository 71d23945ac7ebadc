"""``type: subworkflow``: run another workflow as a child execution and wait for it.

The child runs in the same tenant with the idempotency key ``<execution>/<step key>``, so
a step that runs again finds its child instead of starting a second one. The step's output
is the child's ``outputs``; a child that fails, times out or is cancelled fails the step
with ``SubworkflowFailed`` (its error names the child and carries the child's error).
Cancelling the parent (or the parent failing) cancels the child. Nesting is limited by
``subworkflow_max_depth`` (``SubworkflowTooDeep``). See :mod:`engine.orchestration.children`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from engine.model import WORKFLOW_NAME_PATTERN
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StartChild, StepConfig, StepContext, StepOutcome


class SubworkflowConfig(StepConfig):
    """``workflow`` by name (its latest version unless ``version`` pins one); ``input`` may use templates."""

    workflow: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    version: int | None = Field(default=None, ge=1)
    input: Any = None


class SubworkflowStep(BaseStepType):
    name: ClassVar[str] = "subworkflow"
    Config: ClassVar[type[StepConfig]] = SubworkflowConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, SubworkflowConfig)
        return StartChild(workflow=config.workflow, input=config.input, version=config.version)


register(SubworkflowStep())
