"""``type: switch``: pick a value by the first matching CEL condition, or learn which case works.

``with: {cases: [{when: <cel>, value: <any>}, ...], default: <any>}``. The output is
``{"value": <chosen value>, "case": <index of the matching case, or null for default>}``
so successors can branch with ``when: steps.route.output.case == 0`` or use the value.

``when`` is a CEL expression written bare (no ``${...}``), evaluated in order, first match
wins (``strategy: rules``, the default).

``strategy: bandit`` picks among the cases whose ``when`` holds (a case without ``when`` is
always eligible) by Thompson sampling, as ``ai.route`` does: the arms are the cases'
``name`` (default: their index), counts are kept per ``bandit`` (default ``<workflow>/<step
id>``), ``half_life`` makes older outcomes weigh less, and an ``ai.reward`` step rewards the
decision. The output adds the decision (``route``: the arm, ``bandit``, ``samples``,
``posteriors``, ``explored``), also recorded in the ``step.succeeded`` event.

``value`` may contain templates; like every ``with`` template they are rendered by the
worker before the handler runs, for every case (an error in any case's template fails the
step, even if that case is not chosen).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from engine.decisions import decide
from engine.errors import ExpressionError, Problem, StepFailure
from engine.expressions import type_name
from engine.steptypes import register
from engine.steptypes.ai_route import HalfLife
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded, bare_condition_problems


class SwitchCase(StepConfig):
    #: Required for strategy ``rules``; for ``bandit``, the case is eligible only when it holds.
    when: str | None = Field(default=None, min_length=1)
    value: Any = None
    #: The case's arm for strategy ``bandit`` (default: its index).
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")


class SwitchConfig(StepConfig):
    """``default`` is optional; without it, no match fails the step."""

    cases: list[SwitchCase] = Field(min_length=1)
    default: Any = None
    strategy: Literal["rules", "bandit"] = "rules"
    #: Name of the statistics a bandit learns from (default: ``<workflow>/<step id>``).
    bandit: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_./-]{1,200}$")
    prior: float = Field(default=1.0, gt=0)
    half_life: HalfLife | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SwitchConfig:
        if self.strategy == "rules":
            missing = [str(index) for index, case in enumerate(self.cases) if case.when is None]
            if missing:
                raise ValueError(f"strategy 'rules' needs 'when' on every case (missing on cases {', '.join(missing)})")
            if self.bandit is not None or self.half_life is not None or "prior" in self.model_fields_set:
                raise ValueError("'bandit', 'prior' and 'half_life' are only for strategy 'bandit'")
        arms = self.arms
        if len(set(arms)) != len(arms):
            raise ValueError("case names must be distinct")
        return self

    @property
    def arms(self) -> list[str]:
        return [case.name if case.name is not None else str(index) for index, case in enumerate(self.cases)]

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
        return [(f"cases[{index}].when", case.when) for index, case in enumerate(config.cases) if case.when is not None]

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, SwitchConfig)
        if config.strategy == "bandit":
            return _by_bandit(ctx, config)
        for index, case in enumerate(config.cases):
            if case.when is not None and _matches(ctx, case.when, index):
                return Succeeded({"value": case.value, "case": index})
        return _default(config)


def _default(config: SwitchConfig) -> Succeeded:
    if config.has_default:
        return Succeeded({"value": config.default, "case": None})
    raise StepFailure("no case matched", retryable=False, error_type="NoCaseMatched")


def _by_bandit(ctx: StepContext, config: SwitchConfig) -> StepOutcome:
    """Thompson sampling among the eligible cases; none eligible: the default."""
    eligible = [
        index for index, case in enumerate(config.cases) if case.when is None or _matches(ctx, case.when, index)
    ]
    if not eligible:
        return _default(config)
    arms = config.arms
    bandit = config.bandit or f"{ctx.workflow}/{ctx.step_id}"
    decision = decide(ctx, [arms[index] for index in eligible], bandit, prior=config.prior, half_life=config.half_life)
    index = arms.index(decision["route"])
    decision = {"strategy": "bandit", **decision}
    return Succeeded({"value": config.cases[index].value, "case": index, **decision}, event={"decision": decision})


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
