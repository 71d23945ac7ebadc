"""``type: wait_for_event``: wait until an external event of a type with a correlation key arrives.

``correlation_key`` is CEL evaluated when the step starts waiting (e.g. ``input.order_id``);
an event published with that ``type`` and ``correlation_key`` (REST body field, Pub/Sub
attribute) resumes the step, with the event as its output, if the optional ``match`` (CEL
over ``event``, ``input`` and ``execution``) holds. Events accepted since the execution
started count, also those published before the step began to wait. Without an event by
``timeout``, the step ends as ``on_timeout`` says: ``fail`` (``WaitTimeout``, the default)
or ``succeed`` (output ``null``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from engine.errors import ExpressionError, Problem, StepFailure
from engine.expressions import type_name
from engine.model import Duration
from engine.steptypes import register
from engine.steptypes.base import (
    AwaitedEvent,
    BaseStepType,
    StepConfig,
    StepContext,
    StepOutcome,
    Wait,
    check_condition,
)

#: What a ``match`` may read.
MATCH_VARIABLES = frozenset({"event", "input", "execution"})


class WaitForEventConfig(StepConfig):
    type: str = Field(min_length=1, max_length=200)
    correlation_key: str = Field(min_length=1, max_length=4000)
    match: str | None = Field(default=None, min_length=1, max_length=4000)
    timeout: Duration | None = None
    on_timeout: Literal["fail", "succeed"] = "fail"


class WaitForEventStep(BaseStepType):
    name: ClassVar[str] = "wait_for_event"
    Config: ClassVar[type[StepConfig]] = WaitForEventConfig
    may_wait: ClassVar[bool] = True

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        assert isinstance(config, WaitForEventConfig)
        problems = check_condition(config.match, f"{path}.match", MATCH_VARIABLES)
        if "${" in config.correlation_key:
            problems.append(Problem(f"{path}.correlation_key", "write the CEL expression bare, without '${...}'"))
        return problems

    def expressions(self, config: StepConfig) -> list[tuple[str, str]]:
        """``correlation_key`` reads the execution like a ``with`` template (checked at save time)."""
        assert isinstance(config, WaitForEventConfig)
        return [] if "${" in config.correlation_key else [("correlation_key", config.correlation_key)]

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, WaitForEventConfig)
        try:
            key = ctx.evaluate(config.correlation_key)
        except ExpressionError as exc:
            raise StepFailure(f"correlation_key: {exc.message}", retryable=False, error_type="ExpressionError") from exc
        if not isinstance(key, str | int) or isinstance(key, bool):
            raise StepFailure(
                f"correlation_key must give a string or an integer, not {type_name(key)}",
                retryable=False,
                error_type="ExpressionError",
            )
        until = None if config.timeout is None else ctx.now() + config.timeout
        return Wait(
            until=until,
            on_wake=config.on_timeout,
            match=config.match,
            event=AwaitedEvent(config.type, str(key)),
        )


register(WaitForEventStep())
