"""What a step type is: a config model, optional save-time checks, and an async handler.

A step type module defines one :class:`StepType` and registers it with
:func:`engine.steptypes.register`. Handlers run outside any store transaction and talk to
the world only through :class:`StepContext` (whose ports are provided by the worker).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from engine.errors import Problem
from engine.records import DecodedOnUse


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
    """

    until: float | None = None
    on_wake: str = "succeed"
    match: Mapping[str, Any] = field(default_factory=dict)


StepOutcome = Succeeded | Wait


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
    heartbeat: Callable[[], None] = lambda: None
    cancelled: Callable[[], bool] = lambda: False
    services: Mapping[str, Any] = field(default_factory=dict)

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
