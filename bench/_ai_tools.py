"""No-op agent tools for ``bench/ai_agent.py`` (imported by the benchmark's worker too)."""

from __future__ import annotations

from conveyor import step


@step
def first_tool(value: int) -> int:
    """A tool that does nothing but return its argument."""
    return value


@step
def second_tool(value: int) -> int:
    """Another tool that does nothing but return its argument."""
    return value
