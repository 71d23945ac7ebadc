"""What AI steps are made of, free of any LLM library: model settings, scripted models,
budgets, token usage, and the requests a step makes to the :class:`~engine.ports.AgentRuntime`.

The runtime (LangGraph, in :mod:`engine.adapters.ai_runtime`) is an optional extra
(``conveyor[ai]``); definitions using AI steps validate and save without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import StepFailure

#: ``provider:model`` as understood by LangChain's ``init_chat_model``; ``fake:<name>`` is a
#: scripted model declared under the workflow's ``models:``.
MODEL_SPEC_PATTERN = r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_./:@-]+$"
FAKE_PROVIDER = "fake"
#: The name agents see for the SSRF-guarded HTTP tool.
HTTP_TOOL = "http_request"


def agent_thread_id(tenant: str, execution_id: str, step_key: str) -> str:
    """The LangGraph thread of an ``ai.agent`` step: one per step, shared by all its attempts."""
    return f"{tenant}/{execution_id}/{step_key}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScriptedToolCall(_Frozen):
    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


class ScriptTurn(_Frozen):
    """One reply of a scripted model: text, tool calls, or a structured answer.

    ``structured`` is answered as a call of the last tool bound to the model, which is how
    LangChain asks a model without native structured output for one. ``usage`` overrides
    the token counts (by default: words in the conversation and in the reply).
    """

    content: str = ""
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    structured: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    #: Raise a provider error instead of answering (to exercise fallbacks).
    error: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScriptTurn:
        if self.structured is not None and self.tool_calls:
            raise ValueError("a turn has either 'tool_calls' or 'structured', not both")
        return self


class ScriptedModel(_Frozen):
    """A model for offline runs and tests: reply ``n`` is ``script[n]``, where ``n`` counts the
    model turns already in the conversation, so after a crash it answers the same again."""

    script: tuple[ScriptTurn, ...] = Field(min_length=1)


class ModelSettings(_Frozen):
    """Per-step settings passed to the chat model."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)


class Summarize(_Frozen):
    """Bound a thread's memory: once it holds more than ``after_messages`` messages or about
    ``after_tokens`` tokens, the older messages are replaced by a summary written by ``model``
    (default: the step's model), keeping the last ``keep_messages``."""

    model: str | None = Field(default=None, pattern=MODEL_SPEC_PATTERN)
    after_messages: int | None = Field(default=None, ge=4, le=10_000)
    after_tokens: int | None = Field(default=None, ge=100)
    keep_messages: int = Field(default=6, ge=1, le=1_000)

    @model_validator(mode="after")
    def _triggered(self) -> Summarize:
        if self.after_messages is None and self.after_tokens is None:
            raise ValueError("give 'after_messages' or 'after_tokens' (or both)")
        if self.after_messages is not None and self.keep_messages >= self.after_messages:
            raise ValueError("'keep_messages' must be below 'after_messages'")
        return self


#: The key, in a summary message's ``additional_kwargs``, of what it replaced: the model turns
#: (scripted models and ``turns`` count them) and their usage (budgets count it).
SUMMARY_KEY = "conveyor_summary"


class Budget(_Frozen):
    """Limits counted over every attempt and resume of a step (from its checkpointed usage)."""

    tokens: int | None = Field(default=None, ge=1)
    cost: float | None = Field(default=None, gt=0)


@dataclass(frozen=True)
class Usage:
    """Token counts and cost of some model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost + other.cost,
            self.calls + other.calls,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost": round(self.cost, 6),
        }


def cost_of(model: str, input_tokens: int, output_tokens: int, prices: Mapping[str, Mapping[str, float]]) -> float:
    """Cost from a price table ``{model: {input: per 1M tokens, output: per 1M tokens}}``."""
    price = prices.get(model) or {}
    return (input_tokens * price.get("input", 0.0) + output_tokens * price.get("output", 0.0)) / 1_000_000


class BudgetExceeded(StepFailure):
    """A step or execution spent its token or cost budget. Never retried: a retry would spend more.

    ``usage`` is what the step had spent (recorded with its error, counted for the execution).
    """

    def __init__(self, message: str, usage: Usage | None = None) -> None:
        super().__init__(message, retryable=False, error_type="BudgetExceeded")
        self.usage = usage


def usage_total(by_step: Mapping[str, Mapping[str, Any]] | None, *, without: str | None = None) -> Usage:
    """The sum of per-step usage records (``Usage.as_dict`` shapes), leaving out step ``without``."""
    total = Usage()
    for key, usage in (by_step or {}).items():
        if key != without:
            total = total + Usage(
                int(usage.get("input_tokens", 0)),
                int(usage.get("output_tokens", 0)),
                float(usage.get("cost", 0.0)),
                int(usage.get("calls", 0)),
            )
    return total


def check_budget(
    budget: Budget | None, spent: Usage, scope: str, *, before_call: bool = False, step_usage: Usage | None = None
) -> None:
    """Raise :class:`BudgetExceeded` if ``spent`` went over a limit of ``budget``.

    ``before_call``: a model call is about to be made, so reaching the limit is already too much.
    ``step_usage`` is what the checking step spent (default: ``spent``), kept on the error.
    """
    if budget is None:
        return
    own = step_usage if step_usage is not None else spent
    if budget.tokens is not None and _over(spent.total_tokens, budget.tokens, before_call):
        raise BudgetExceeded(f"{scope} used {spent.total_tokens} tokens; its budget is {budget.tokens}", own)
    if budget.cost is not None and _over(spent.cost, budget.cost, before_call):
        raise BudgetExceeded(f"{scope} cost {spent.cost:.6f}; its budget is {budget.cost}", own)


def check_budgets(request: AgentRequest, step: Usage, scope: str, *, before_call: bool = False) -> None:
    """The step's budget on its own usage, and the execution's on everything spent."""
    check_budget(request.budget, step, scope, before_call=before_call)
    check_budget(
        request.execution_budget,
        request.execution_spent + step,
        "the execution",
        before_call=before_call,
        step_usage=step,
    )


def _over(spent: float, limit: float, before_call: bool) -> bool:
    return spent >= limit if before_call else spent > limit


@dataclass(frozen=True)
class AgentRequest:
    """What an ``ai.agent`` step asks the runtime to run (its rendered configuration)."""

    model: str
    prompt: str
    system: str | None = None
    fallbacks: Sequence[str] = ()
    settings: ModelSettings = field(default_factory=ModelSettings)
    tools: Sequence[str] = ()
    #: Methods the SSRF-guarded HTTP tool (``http_request``) may use; empty: no HTTP tool.
    http_methods: Sequence[str] = ()
    http_max_chars: int = 20_000
    approve: Sequence[str] = ()
    output_schema: Mapping[str, Any] | None = None
    budget: Budget | None = None
    max_turns: int = 25
    #: Send the model's tokens to the live progress stream as they come.
    stream: bool = False
    #: Summarise older turns to bound the thread (``None``: only ``max_turns`` bounds it).
    summarize: Summarize | None = None
    #: Long-term memory: the namespace (within the tenant's) of the ``remember``/``recall`` tools.
    memory: Sequence[str] | None = None
    #: How long a remembered note is kept after it was last written (seconds; ``None``: until replaced).
    memory_ttl: float | None = None
    #: The workflow's ``budget`` and what the execution's other steps spent so far.
    execution_budget: Budget | None = None
    execution_spent: Usage = field(default_factory=lambda: Usage())


@dataclass(frozen=True)
class AgentFinished:
    """The agent answered: ``answer`` text, ``structured`` output if asked, usage over all attempts."""

    answer: str
    structured: Any
    usage: Usage
    turns: int


@dataclass(frozen=True)
class AgentInterrupted:
    """The agent paused for a person (e.g. a tool needs approval); ``request`` is JSON."""

    interrupt_id: str
    request: Any
    schema: Mapping[str, Any] | None
    usage: Usage


AgentOutcome = AgentFinished | AgentInterrupted


@dataclass(frozen=True)
class ChoiceRequest:
    """An ``ai.route`` question for a model: pick one of ``routes`` (structured output)."""

    model: str
    prompt: str
    routes: Sequence[str]
    fallbacks: Sequence[str] = ()
    settings: ModelSettings = field(default_factory=ModelSettings)
    system: str | None = None


@dataclass(frozen=True)
class Choice:
    """A model's answer to a :class:`ChoiceRequest`, as it gave it (not yet checked)."""

    answer: Mapping[str, Any] | None
    usage: Usage
    error: str | None = None
