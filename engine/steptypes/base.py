"""What a step type is: a config model, optional save-time checks, and an async handler.

A step type module defines one :class:`StepType` and registers it with
:func:`engine.steptypes.register`. Handlers run outside any store transaction and talk to
the world only through :class:`StepContext`, whose typed :class:`StepPorts` the composition
root (:mod:`engine.bootstrap`) builds from settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from engine.errors import ExpressionError, Problem, StepFailure
from engine.expressions import compile_expression
from engine.records import DecodedOnUse

if TYPE_CHECKING:
    from engine.ai import Budget, ScriptedModel, Usage
    from engine.ports import AgentRuntime, DecisionStats, EventSink, HttpClient, PromptStore, Publisher
    from engine.prompts import PromptRef, PromptVersion


class StepConfig(BaseModel):
    """Base of every step type's ``with:`` model: unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NoConfig(StepConfig):
    """For step types that take no configuration."""


@dataclass(frozen=True)
class Succeeded:
    """The step finished with ``output``; ``event`` is recorded in its ``step.succeeded`` event."""

    output: Any = None
    event: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class AwaitedEvent:
    """External events a waiting step takes: of ``type`` with ``correlation_key``."""

    type: str
    correlation_key: str


@dataclass(frozen=True)
class Wait:
    """Park the step in WAITING until ``until`` (epoch seconds) or a signal/event arrives.

    ``on_wake`` says what happens when the timer fires: ``"succeed"`` (a ``wait`` step) or
    ``"fail"`` (a wait-for-event timeout). ``match`` is a CEL condition every delivery (a
    signal, an event) must satisfy, checked when it arrives; ``event`` names the external
    events the step waits for. ``kind`` names what the step waits for (``"timer"``,
    ``"approval"``, ...); ``details`` are kept in the step's ``wait`` for whoever resumes it,
    and ``timeout_output`` / ``timeout_error`` there say what a timeout records.
    """

    until: float | None = None
    on_wake: str = "succeed"
    match: str | None = None
    event: AwaitedEvent | None = None
    #: Set by a step that pauses for an answer (an agent's interrupt): a signal then sends the
    #: step back to the queue with its payload as ``ctx.resume`` instead of completing it.
    #: ``request`` (JSON) says what is asked; ``schema`` (JSON Schema) checks the answer.
    interrupt: Mapping[str, Any] | None = None
    kind: str = "timer"
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StartChild:
    """Start a child execution of ``workflow`` and wait in WAITING until it settles.

    The worker's outcome transaction starts the child and parks the step together, so the
    child cannot settle before its parent step waits for it.
    """

    workflow: str
    input: Any = None
    version: int | None = None


StepOutcome = Succeeded | Wait | StartChild


@dataclass(frozen=True)
class StepPorts:
    """Services step types use, built by the composition root (:mod:`engine.bootstrap`).

    A port is ``None`` when its optional extra is not installed (or, for ``http``, when this
    process was built without one); the step type needing it then fails with a clear error.
    """

    ai: AgentRuntime | None = None
    decisions: DecisionStats | None = None
    publisher: Publisher | None = None
    #: Outbound HTTP under the egress policy (the ``http`` step; agent tools may use it too).
    http: HttpClient | None = None
    #: The live event stream (not the store): AI steps with ``stream: true`` send tokens there.
    live: EventSink | None = None
    #: The tenants' stored prompt templates (AI steps naming a prompt the workflow does not declare).
    prompts: PromptStore | None = None

    def require_http(self) -> HttpClient:
        if self.http is None:
            message = "no HTTP client is configured in this worker"
            raise StepFailure(message, retryable=False, error_type="NotConfigured")
        return self.http


@dataclass
class StepContext:
    """Everything a handler may use: inputs, identity, and a few well-defined capabilities."""

    tenant: str
    execution_id: str
    step_key: str
    step_id: str
    attempt: int
    #: The execution input; the runner hands it over as a ``Deferred``, decoded on first use.
    input: Any = DecodedOnUse()  # noqa: RUF009 - a descriptor (see DecodedOnUse), not a shared default
    item: Any = None
    index: int | None = None
    now: Callable[[], float] = lambda: 0.0
    evaluate: Callable[[str], Any] = lambda expression: None
    #: Render a ``${...}`` template with the step's bound variables (as its config was rendered).
    render: Callable[[Any], Any] = lambda template: template
    heartbeat: Callable[[], None] = lambda: None
    #: The epoch of the step's lease, ``None`` while it runs unclaimed (a heartbeat claims it).
    lease_epoch: Callable[[], int | None] = lambda: None
    cancelled: Callable[[], bool] = lambda: False
    services: Mapping[str, Any] = field(default_factory=dict)
    ports: StepPorts = field(default_factory=StepPorts)
    #: Scripted models the workflow declares (``models:``), for ``fake:<name>`` model specs.
    models: Mapping[str, ScriptedModel] = field(default_factory=dict)
    #: Prompt templates the workflow declares (``prompts:``), by name.
    prompts: Mapping[str, Sequence[PromptVersion]] = field(default_factory=dict)
    #: The workflow's name (bandit statistics are kept per workflow and step).
    workflow: str = ""
    #: The workflow's model budget and what the execution's other AI steps spent of it.
    execution_budget: Budget | None = None
    execution_spent: Usage | None = None
    #: The answer a signal gave to this step's interrupt (see ``Wait.interrupt``), if any.
    resume: Any = None

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and redeliveries: use it for side effects you must not repeat."""
        return f"{self.execution_id}/{self.step_key}"


class StepType(Protocol):
    """A step type: ``name``, its ``Config`` model, save-time ``check`` and the ``run`` handler."""

    name: ClassVar[str]
    Config: ClassVar[type[StepConfig]]
    #: Whether the step may park in WAITING (so a signal sent before it waits is worth keeping).
    may_wait: ClassVar[bool]

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        """Problems beyond the config model's own validation (e.g. expressions)."""
        ...

    def expressions(self, config: StepConfig) -> list[tuple[str, str]]:
        """Bare CEL sources inside the config, as (relative path, source), checked at save time."""
        ...

    def prompt_refs(self, config: StepConfig) -> list[tuple[str, PromptRef]]:
        """Named prompts the config uses, as (relative path, reference), checked at save time."""
        ...

    def run(self, ctx: StepContext, config: StepConfig) -> Awaitable[StepOutcome]: ...


class BaseStepType:
    """Convenience base: no extra checks."""

    name: ClassVar[str]
    Config: ClassVar[type[StepConfig]] = NoConfig
    may_wait: ClassVar[bool] = False

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        return []

    def expressions(self, config: StepConfig) -> list[tuple[str, str]]:
        return []

    def prompt_refs(self, config: StepConfig) -> list[tuple[str, PromptRef]]:
        return []


def ensure_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def bare_condition_problems(expressions: list[tuple[str, str]], path: str) -> list[Problem]:
    """Problems of CEL conditions written bare (no ``${...}``), e.g. a switch's cases."""
    return [problem for where, source in expressions for problem in check_condition(source, f"{path}.{where}")]


def check_condition(source: str | None, path: str, allowed: frozenset[str] | None = None) -> list[Problem]:
    """Save-time check of a bare CEL condition evaluated against ``allowed`` variables only
    (``None``: any variable)."""
    if source is None:
        return []
    if "${" in source:
        return [Problem(path, "write the CEL condition bare, without '${...}'")]
    try:
        expression = compile_expression(source)
    except ExpressionError as exc:
        return [Problem(path, exc.message)]
    if allowed is None:
        return []
    extra = sorted(expression.variables - allowed)
    if extra:
        return [Problem(path, f"may only use {', '.join(sorted(allowed))}, not {', '.join(extra)}")]
    return []
