"""``type: switch``: pick a value by the first matching CEL condition.

``with: {cases: [{when: <cel>, value: <any>}, ...], default: <any>}``. The output is
``{"value": <chosen value>, "case": <index of the matching case, or null for default>}``
so successors can branch with ``when: steps.route.output.case == 0`` or use the value.

``when`` is a CEL expression written bare (no ``${...}``), evaluated in order, first match
wins. ``value`` may contain templates; like every ``with`` template they are rendered by
the worker before the handler runs, for every case (an error in any case's template fails
the step, even if that case is not chosen).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from engine.errors import ExpressionError, Problem, StepFailure
from engine.expressions import type_name
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded, bare_condition_problems


class SwitchCase(StepConfig):
    when: str = Field(min_length=1)
    value: Any = None


class SwitchConfig(StepConfig):
    """``default`` is optional; without it, no match fails the step."""

    cases: list[SwitchCase] = Field(min_length=1)
    default: Any = None

    @property
    def has_default(self) -> bool:
        # ``default: null`` is a real default, so presence is what counts, not the value.
        return "default" in self.model_fields_set


class SwitchStep(BaseStepType):
    """Evaluate cases in order with ``ctx.evaluate``; output the first match or the default."""

    name: ClassVar[str] = "switch"
    Config: ClassVar[type[StepConfig]] = SwitchConfig

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        return bare_condition_problems(self.expressions(config), path)

    def expressions(self, config: StepConfig) -> list[tuple[str, str]]:
        """CEL sources in the config, with paths relative to ``with`` (used by the compiler)."""
        assert isinstance(config, SwitchConfig)
        return [(f"cases[{index}].when", case.when) for index, case in enumerate(config.cases)]

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, SwitchConfig)
        for index, case in enumerate(config.cases):
            if _matches(ctx, case.when, index):
                return Succeeded({"value": case.value, "case": index})
        if config.has_default:
            return Succeeded({"value": config.default, "case": None})
        raise StepFailure("no case matched", retryable=False, error_type="NoCaseMatched")


def _matches(ctx: StepContext, source: str, index: int) -> bool:
    # Evaluation errors are deterministic for the same inputs: retrying would not help.
    try:
        result = ctx.evaluate(source)
    except ExpressionError as exc:
        raise StepFailure(f"cases[{index}].when: {exc.message}", retryable=False, error_type="ExpressionError") from exc
    if not isinstance(result, bool):
        raise StepFailure(
            f"cases[{index}].when must be a boolean but {source!r} returned {type_name(result)}",
            retryable=False,
            error_type="ExpressionError",
        )
    return result


register(SwitchStep())
