"""What a caller's role lets it see of worker internals.

A failed step's ``error`` carries the worker's traceback (host paths trimmed by the worker).
It helps operators fix a step; a viewer, who can do nothing about it, sees the error's type
and message only. The principal's role is noted once per request (REST dependency, GraphQL
context, stream authentication) and consulted where records become responses; anything not
noted (fail closed) sees no traceback.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from engine.auth import Principal, Role

TRACEBACK = "traceback"
_sees_tracebacks: ContextVar[bool] = ContextVar("conveyor_sees_tracebacks", default=False)


def note_caller(principal: Principal) -> None:
    """Remember, for the rest of this request or connection, what the caller may see."""
    _sees_tracebacks.set(principal.role.allows(Role.OPERATOR))


def visible_error(error: Any) -> Any:
    """``error`` without its traceback unless the caller is an operator or above."""
    if isinstance(error, dict) and TRACEBACK in error and not _sees_tracebacks.get():
        return {k: v for k, v in error.items() if k != TRACEBACK}
    return error


def visible_event_data(data: dict[str, Any]) -> dict[str, Any]:
    """Event data with its ``error`` shown as :func:`visible_error` shows it."""
    if "error" in data:
        return {**data, "error": visible_error(data["error"])}
    return data
