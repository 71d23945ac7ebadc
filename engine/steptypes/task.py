"""``type: task``: call a Python function registered with ``@conveyor.step``."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any, ClassVar

from pydantic import Field

from engine import functions
from engine.errors import Problem, StepFailure
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded
from engine.threads import DaemonThreadPool

#: Where sync step functions run: daemon threads, so a step abandoned on cancel or timeout
#: does not keep the process from exiting (see ``engine.threads``).
SYNC_STEPS = DaemonThreadPool()


class TaskConfig(StepConfig):
    function: str = Field(pattern=r"^[A-Za-z_][\w.]*$")
    args: dict[str, Any] = Field(default_factory=dict)


class TaskStep(BaseStepType):
    name: ClassVar[str] = "task"
    Config: ClassVar[type[StepConfig]] = TaskConfig

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        # Functions are resolved when the step runs: the API that saves a definition need not
        # import user code, and workers may load it from CONVEYOR_IMPORTS.
        return []

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, TaskConfig)
        registered = functions.resolve(config.function)
        if registered is None:
            raise StepFailure(
                f"no step function named {config.function!r} is registered (decorate it with "
                "@conveyor.step and list its module in CONVEYOR_IMPORTS)",
                retryable=False,
                error_type="FunctionNotFound",
            )
        kwargs = dict(config.args)
        if registered.wants_context:
            kwargs["ctx"] = ctx
        if registered.is_async:
            result = await registered.function(**kwargs)
        else:
            call = functools.partial(contextvars.copy_context().run, registered.function, **kwargs)
            result = await asyncio.get_running_loop().run_in_executor(SYNC_STEPS, call)
        return Succeeded(result)


register(TaskStep())
