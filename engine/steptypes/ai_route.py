"""``type: ai.route``: choose one of the declared ``routes``, and record why.

Strategies:

* ``rules``: the first ``rules[i].when`` (bare CEL) that holds names the route; else ``default``.
* ``llm``: a model answers with structured output ``{route, rationale, confidence}``; an
  answer that is invalid, names an undeclared route, fails, or is below ``min_confidence``
  takes the ``default`` route (the model's answer is kept in the decision).
* ``bandit``: Beta-Bernoulli Thompson sampling over the routes, with counts kept per
  workflow and step (``bandit``); the draw is seeded from the step's idempotency key, so a
  redelivery picks the same route. Rewards come from an ``ai.reward`` step. With
  ``half_life`` (a duration), older outcomes weigh less (see :mod:`engine.bandit`).

The decision (route, strategy, rationale, confidence, samples, posteriors, explored) is the
step's output and the data of its ``step.succeeded`` event, so a retry or a replay of later
steps never asks again. Successors branch with ``when: steps.route.output.route == "..."``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from engine.ai import MODEL_SPEC_PATTERN, ChoiceRequest, ModelSettings
from engine.decisions import decide
from engine.durations import parse_duration
from engine.errors import ExpressionError, Problem, StepFailure
from engine.prompts import PromptRef, render_prompt
from engine.steptypes import register
from engine.steptypes.ai_agent import runtime_of
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded, bare_condition_problems

#: A bandit's half-life: an outcome this old weighs half (at least a second).
HalfLife = Annotated[float, BeforeValidator(parse_duration), Field(ge=1)]


class RouteRule(StepConfig):
    when: str = Field(min_length=1)
    route: str


class RouteConfig(StepConfig):
    strategy: Literal["rules", "llm", "bandit"]
    routes: list[str] = Field(min_length=1)
    #: The route taken when no rule matches, or the model's answer is not usable.
    default: str | None = None
    rules: list[RouteRule] = Field(default_factory=list)
    model: str | None = Field(default=None, pattern=MODEL_SPEC_PATTERN)
    fallbacks: list[str] = Field(default_factory=list)
    settings: ModelSettings = ModelSettings()
    system: str | None = None
    #: The question for strategy ``llm`` (a template), or a named prompt of the workflow or the tenant.
    prompt: str | PromptRef | None = None
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    #: Name of the statistics a bandit learns from (default: ``<workflow>/<step id>``).
    bandit: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_./-]{1,200}$")
    #: Beta prior pseudo-count for each arm's successes and failures.
    prior: float = Field(default=1.0, gt=0)
    #: Decay for a bandit: an outcome ``half_life`` old weighs half (none: every outcome counts fully).
    half_life: HalfLife | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        if len(set(self.routes)) != len(self.routes):
            raise ValueError("routes must be distinct")
        named = [rule.route for rule in self.rules] + ([self.default] if self.default is not None else [])
        unknown = sorted({route for route in named if route not in self.routes})
        if unknown:
            raise ValueError(f"not a declared route: {', '.join(unknown)}")
        if self.strategy == "rules" and not self.rules:
            raise ValueError("strategy 'rules' needs 'rules'")
        if self.strategy == "llm" and (self.model is None or self.prompt is None or self.default is None):
            raise ValueError("strategy 'llm' needs 'model', 'prompt' and a 'default' route")
        if self.strategy != "rules" and self.rules:
            raise ValueError("'rules' are only for strategy 'rules'")
        if self.strategy != "llm" and (self.model is not None or self.prompt is not None):
            raise ValueError("'model' and 'prompt' are only for strategy 'llm'")
        if self.strategy != "bandit" and self.half_life is not None:
            raise ValueError("'half_life' is only for strategy 'bandit'")
        return self


class RouteStep(BaseStepType):
    name: ClassVar[str] = "ai.route"
    Config: ClassVar[type[StepConfig]] = RouteConfig

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        return bare_condition_problems(self.expressions(config), path)

    def expressions(self, config: StepConfig) -> list[tuple[str, str]]:
        assert isinstance(config, RouteConfig)
        return [(f"rules[{index}].when", rule.when) for index, rule in enumerate(config.rules)]

    def prompt_refs(self, config: StepConfig) -> list[tuple[str, PromptRef]]:
        assert isinstance(config, RouteConfig)
        return [("prompt", config.prompt)] if isinstance(config.prompt, PromptRef) else []

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, RouteConfig)
        if config.strategy == "rules":
            decision = _by_rules(ctx, config)
        elif config.strategy == "llm":
            decision = await _by_model(ctx, config)
        else:
            decision = _by_bandit(ctx, config)
        decision = {"strategy": config.strategy, **decision}
        return Succeeded(decision, event={"decision": decision})


def _by_rules(ctx: StepContext, config: RouteConfig) -> dict[str, Any]:
    for index, rule in enumerate(config.rules):
        try:
            holds = ctx.evaluate(rule.when)
        except ExpressionError as exc:
            raise StepFailure(
                f"rules[{index}].when: {exc.message}", retryable=False, error_type="ExpressionError"
            ) from exc
        if holds is True:
            return {"route": rule.route, "rationale": f"rules[{index}]: {rule.when}", "rule": index}
    if config.default is None:
        raise StepFailure("no rule matched and there is no default route", retryable=False, error_type="NoRouteMatched")
    return {"route": config.default, "rationale": "no rule matched: default route", "rule": None}


async def _by_model(ctx: StepContext, config: RouteConfig) -> dict[str, Any]:
    assert config.model is not None and config.prompt is not None and config.default is not None
    prompt = render_prompt(ctx, config.prompt, config.system)
    request = ChoiceRequest(
        model=config.model,
        prompt=prompt.text,
        routes=tuple(config.routes),
        fallbacks=tuple(config.fallbacks),
        settings=config.settings,
        system=prompt.system,
    )
    choice = await runtime_of(ctx).choose(ctx, request)
    answer = dict(choice.answer) if choice.answer is not None else None
    usage = choice.usage.as_dict()
    problem = choice.error or _unusable(answer, config)
    if problem is not None:
        return {
            "route": config.default,
            "rationale": f"fallback: {problem}",
            "confidence": None,
            "fallback": True,
            "answer": answer,
            "usage": usage,
            "prompt": prompt.as_dict(),
        }
    assert answer is not None
    return {
        "route": answer["route"],
        "rationale": str(answer.get("rationale", "")),
        "confidence": float(answer["confidence"]),
        "fallback": False,
        "answer": answer,
        "usage": usage,
        "prompt": prompt.as_dict(),
    }


def _unusable(answer: dict[str, Any] | None, config: RouteConfig) -> str | None:
    """Why the model's answer cannot be followed, or ``None``."""
    if answer is None:
        return "no answer"
    if answer.get("route") not in config.routes:
        return f"{answer.get('route')!r} is not a declared route"
    confidence = answer.get("confidence")
    if not isinstance(confidence, int | float) or isinstance(confidence, bool):
        return "no confidence given"
    if confidence < config.min_confidence:
        return f"confidence {confidence} is below {config.min_confidence}"
    return None


def bandit_name(ctx: StepContext, config: RouteConfig) -> str:
    return config.bandit or f"{ctx.workflow}/{ctx.step_id}"


def _by_bandit(ctx: StepContext, config: RouteConfig) -> dict[str, Any]:
    return decide(ctx, config.routes, bandit_name(ctx, config), prior=config.prior, half_life=config.half_life)


register(RouteStep())
