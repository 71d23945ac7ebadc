"""Registry of step types. Built-in types register on import; later features add their own."""

from __future__ import annotations

from engine.steptypes.base import StepType

_REGISTRY: dict[str, StepType] = {}


def register(step_type: StepType) -> StepType:
    """Make a step type available to definitions under ``step_type.name``."""
    _REGISTRY[step_type.name] = step_type
    return step_type


def get(name: str) -> StepType | None:
    _load_builtins()
    return _REGISTRY.get(name)


def names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def _load_builtins() -> None:
    # Imported lazily so that a built-in module can import this registry without a cycle.
    from engine.steptypes import (  # noqa: F401
        ai_agent,
        ai_reward,
        ai_route,
        approval,
        fail,
        http,
        pubsub_publish,
        subworkflow,
        switch,
        task,
        transform,
        wait,
        wait_for_event,
    )
