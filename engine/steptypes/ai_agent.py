"""``type: ai.agent``: a LangGraph tool-calling agent as a durable step.

```yaml
- id: support
  type: ai.agent
  with:
    model: openai:gpt-4o-mini          # or fake:<name>, a scripted model under `models:`
    fallbacks: [anthropic:claude-3-5-haiku-latest]
    settings: {temperature: 0, max_tokens: 800, timeout: 30}
    system: You are a support agent.
    prompt: "Order ${input.order_id}: ${input.question}"   # or a named prompt: {name: reply, version: 2}
    tools: [shop.lookup_order, shop.refund]   # registered @step functions
    http: {methods: [GET]}                    # optional: the SSRF-guarded HTTP tool, http_request
    approve: [shop.refund]                    # these wait for a person (a signal) first
    output_schema: {type: object, properties: {...}}   # optional structured answer
    budget: {tokens: 20000, cost: 0.05}       # over all attempts and resumes of the step
    summarize: {after_messages: 30, keep_messages: 8}   # optional: bound the thread's memory
    memory: {namespace: [customers, "${input.customer}"], ttl: 30d}   # optional: remember/recall across runs
```

All attempts of the step share one checkpointed thread: a retry or a redelivery continues
where the last attempt stopped, and a finished thread answers without calling the model.
The output is ``{answer, structured, usage, turns}``. A tool needing approval parks the step
in WAITING with the request as JSON; a signal answering it (``{"type": "approve"}``,
``{"type": "reject", "message": ...}``, ...) sends the step back to the queue to resume.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from engine.ai import (
    HTTP_TOOL,
    MODEL_SPEC_PATTERN,
    AgentFinished,
    AgentRequest,
    Budget,
    ModelSettings,
    Summarize,
    Usage,
    check_budgets,
)
from engine.durations import parse_duration
from engine.errors import StepFailure
from engine.ports import AgentRuntime
from engine.prompts import PromptRef, render_prompt
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded, Wait

_FUNCTION_PATTERN = r"^[A-Za-z_][\w.]*$"


HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


class HttpToolConfig(StepConfig):
    """The SSRF-guarded HTTP tool (``http_request``): which methods, how much of a body it reads."""

    methods: list[HttpMethod] = Field(default_factory=lambda: list[HttpMethod](["GET"]), min_length=1)
    max_chars: int = Field(default=20_000, ge=100, le=1_000_000)


class MemoryConfig(StepConfig):
    """Long-term memory: the agent gets ``remember``/``recall`` over this namespace of its tenant's store."""

    namespace: list[Annotated[str, Field(pattern=r"^[^.]{1,200}$")]] = Field(min_length=1, max_length=10)
    #: Keep a note this long after it was last written (a duration; none: until it is replaced).
    ttl: Annotated[float, BeforeValidator(parse_duration), Field(ge=1)] | None = None


class AgentConfig(StepConfig):
    model: str = Field(pattern=MODEL_SPEC_PATTERN)
    fallbacks: list[str] = Field(default_factory=list)
    settings: ModelSettings = ModelSettings()
    system: str | None = None
    #: The prompt text (a template), or a named prompt of the workflow or the tenant.
    prompt: Annotated[str, Field(min_length=1)] | PromptRef
    tools: list[str] = Field(default_factory=list)
    #: Give the agent the SSRF-guarded HTTP tool (``http_request``; the egress policy applies).
    http: HttpToolConfig | None = None
    approve: list[str] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    budget: Budget | None = None
    max_turns: int = Field(default=25, ge=1, le=200)
    #: Send the model's tokens to the live progress stream (never to the store) as they come.
    stream: bool = False
    #: Bound the thread's memory by summarising older turns (``None``: only ``max_turns`` bounds it).
    summarize: Summarize | None = None
    #: Opt-in long-term memory, kept across executions (per tenant and namespace).
    memory: MemoryConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AgentConfig:
        import re

        for spec in self.fallbacks:
            if not re.match(MODEL_SPEC_PATTERN, spec):
                raise ValueError(f"fallback {spec!r} is not a 'provider:model' spec")
        for name in self.tools:
            if not re.match(_FUNCTION_PATTERN, name):
                raise ValueError(f"tool {name!r} is not a function name")
        names = [name.rpartition(".")[2] for name in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tools must have distinct last names; repeated: {', '.join(duplicates)}")
        available = set(self.tools) | ({HTTP_TOOL} if self.http is not None else set())
        unknown = sorted(set(self.approve) - available)
        if unknown:
            raise ValueError(f"approve lists tools the agent does not have: {', '.join(unknown)}")
        if self.memory is not None and {"remember", "recall"} & set(names):
            raise ValueError("'remember' and 'recall' are the memory tools' names: rename those tools")
        if HTTP_TOOL in names:
            raise ValueError(f"{HTTP_TOOL!r} is the HTTP tool's name: give it with 'http', not in 'tools'")
        return self


def runtime_of(ctx: StepContext) -> AgentRuntime:
    """The AI runtime port, or a clear failure when ``conveyor[ai]`` is not installed."""
    if ctx.ports.ai is None:
        raise StepFailure(
            "AI steps need the 'ai' extra: pip install 'conveyor[ai]'",
            retryable=False,
            error_type="AiUnavailable",
        )
    return ctx.ports.ai


class AgentStep(BaseStepType):
    name: ClassVar[str] = "ai.agent"
    Config: ClassVar[type[StepConfig]] = AgentConfig
    may_wait: ClassVar[bool] = True

    def prompt_refs(self, config: StepConfig) -> list[tuple[str, PromptRef]]:
        assert isinstance(config, AgentConfig)
        return [("prompt", config.prompt)] if isinstance(config.prompt, PromptRef) else []

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, AgentConfig)
        prompt = render_prompt(ctx, config.prompt, config.system)
        request = AgentRequest(
            model=config.model,
            prompt=prompt.text,
            system=prompt.system,
            fallbacks=tuple(config.fallbacks),
            settings=config.settings,
            tools=tuple(config.tools),
            http_methods=tuple(config.http.methods) if config.http is not None else (),
            http_max_chars=config.http.max_chars if config.http is not None else 20_000,
            approve=tuple(config.approve),
            output_schema=config.output_schema,
            budget=config.budget,
            max_turns=config.max_turns,
            stream=config.stream,
            summarize=config.summarize,
            memory=tuple(config.memory.namespace) if config.memory is not None else None,
            memory_ttl=config.memory.ttl if config.memory is not None else None,
            execution_budget=ctx.execution_budget,
            execution_spent=ctx.execution_spent or Usage(),
        )
        outcome = await runtime_of(ctx).run_agent(ctx, request)
        if isinstance(outcome, AgentFinished):
            # The last call may have gone over: the answer is not accepted past a budget.
            check_budgets(request, outcome.usage, f"step {ctx.step_key!r}")
            usage = outcome.usage.as_dict()
            return Succeeded(
                {"answer": outcome.answer, "structured": outcome.structured, "usage": usage, "turns": outcome.turns},
                event={"model": config.model, "usage": usage, "prompt": prompt.as_dict(), "answer": outcome.answer},
            )
        return Wait(
            kind="interrupt",
            interrupt={
                "id": outcome.interrupt_id,
                "request": outcome.request,
                "schema": outcome.schema,
                "usage": outcome.usage.as_dict(),
            }
        )


register(AgentStep())
