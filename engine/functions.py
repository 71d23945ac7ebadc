"""Registry of user step functions for ``type: task`` steps.

Only functions decorated with :func:`step` can be called by a definition: naming an
arbitrary importable callable (``os.system``) is refused. A function is registered under
``<module>.<name>`` unless a name is given; a definition's ``function: payments.charge``
imports module ``payments`` on first use if the name is not registered yet.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RegisteredFunction:
    name: str
    function: Callable[..., Any]
    is_async: bool
    wants_context: bool


_FUNCTIONS: dict[str, RegisteredFunction] = {}


@overload
def step(function: F) -> F: ...


@overload
def step(*, name: str | None = None) -> Callable[[F], F]: ...


def step(function: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register a sync or async function as a step callable by ``type: task``.

    Arguments come from the step's ``with.args`` by keyword. A parameter named ``ctx``
    receives the :class:`~engine.steptypes.base.StepContext`.
    """

    def decorate(fn: F) -> F:
        registered_name = name or f"{fn.__module__}.{fn.__name__}"
        _FUNCTIONS[registered_name] = RegisteredFunction(
            name=registered_name,
            function=fn,
            is_async=inspect.iscoroutinefunction(fn),
            wants_context="ctx" in inspect.signature(fn).parameters,
        )
        return fn

    return decorate(function) if function is not None else decorate



def resolve(name: str) -> RegisteredFunction | None:
    """Find a registered function, importing its module on first use."""
    found = _FUNCTIONS.get(name)
    if found is not None:
        return found
    module, _, _ = name.rpartition(".")
    if module:
        try:
            importlib.import_module(module)
        except ImportError:
            return None
    return _FUNCTIONS.get(name)


def import_modules(modules: list[str]) -> None:
    """Import user modules named in settings so their ``@step`` functions register."""
    for module in modules:
        importlib.import_module(module)
