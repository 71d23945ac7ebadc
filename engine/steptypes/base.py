"""What a step type is: a config model, optional save-time checks, and an async handler.

A step type module defines one :class:`StepType` and registers it with
:func:`engine.steptypes.register`. Handlers run outside any store transaction and talk to
the world only through :class:`StepContext`, whose typed :class:`StepPorts` the composition
root (:mod:`engine.bootstrap`) builds from settings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from engine.errors import Problem, StepFailure
from engine.ports import HttpClient


class StepConfig(BaseModel):
    """Base of every step type's ``with:`` model: unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class NoConfig(StepConfig):
    """For step types that take no configuration."""


@dataclass(frozen=True)
class Succeeded:
    """The step finished with ``output``."""

    output: Any = None


@dataclass(frozen=True)
class Wait:
    """Park the step in WAITING until ``until`` (epoch seconds) or a signal/event arrives.

    ``on_wake`` says what happens when the timer fires: ``"succeed"`` (a ``wait`` step) or
    ``"fail"`` (a wait-for-event timeout). ``match`` carries what a signal must satisfy.
    ``kind`` names what the step waits for (``"timer"``, ``"approval"``, ...): a plain signal
    resumes only a ``timer`` wait. ``details`` are kept on the step for whoever resumes it;
    ``timeout_output`` and ``timeout_error`` there say what a timeout records.
    """

    until: float | None = None
    on_wake: str = "succeed"
    match: Mapping[str, Any] = field(default_factory=dict)
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
    """The typed services step handlers may use, built by :mod:`engine.bootstrap`.

    A port left ``None`` is not configured in this process; the step type that needs it
    fails with a clear error (:meth:`require_http`).
    """

    http: HttpClient | None = None

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
    input: Any
    item: Any = None
    index: int | None = None
    now: Callable[[], float] = lambda: 0.0
    evaluate: Callable[[str], Any] = lambda expression: None
    heartbeat: Callable[[], None] = lambda: None
    cancelled: Callable[[], bool] = lambda: False
    services: Mapping[str, Any] = field(default_factory=dict)
    ports: StepPorts = field(default_factory=StepPorts)

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and redeliveries: use it for side effects you must not repeat."""
        return f"{self.execution_id}/{self.step_key}"


class StepType(Protocol):
    """A step type: ``name``, its ``Config`` model, save-time ``check`` and the ``run`` handler."""

    name: ClassVar[str]
    Config: ClassVar[type[StepConfig]]

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        """Problems beyond the config model's own validation (e.g. expressions)."""
        ...

    def expressions(self, config: StepConfig) -> list[tuple[str, str]]:
        """Bare CEL sources inside the config, as (relative path, source), checked at save time."""
        ...

    def run(self, ctx: StepContext, config: StepConfig) -> Awaitable[StepOutcome]: ...


class BaseStepType:
    """Convenience base: no extra checks."""

    name: ClassVar[str]
    Config: ClassVar[type[StepConfig]] = NoConfig

    def check(self, config: StepConfig, path: str) -> list[Problem]:
        return []

    def expressions(self, config: StepConfig) -> list[tuple[str, str]]:
        return []


def ensure_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
