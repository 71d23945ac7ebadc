"""Strawberry's resolver decorators, typed: ``@fields.field(...)``, ``@fields.mutation(...)``, ``@fields.subscription``.

Called with options only, ``strawberry.field(description=...)`` (and ``mutation``, ``subscription``)
resolves to the overload meant for declarations such as ``name: str = strawberry.field(...)``,
which returns ``Any``: mypy then reports every resolver it decorates as made untyped
(``untyped-decorator``, strawberry-graphql/strawberry#1929; the Strawberry mypy plugin only
covers the pydantic integration). These take the options the API uses and hand the resolver to
Strawberry positionally, the overload typed to return the :class:`StrawberryField` that the
decorated attribute is at run time. Strawberry builds the same field either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from strawberry.extensions.field_extension import FieldExtension
from strawberry.types.field import StrawberryField

#: A resolver method, as Strawberry takes it (sync or async, any arguments).
Resolver = Callable[..., Any]
Decorator = Callable[[Resolver], StrawberryField]


def field(*, description: str, extensions: list[FieldExtension] | None = None) -> Decorator:
    """``@fields.field(description=..., extensions=...)`` for a resolver."""
    return lambda resolver: strawberry.field(resolver, description=description, extensions=extensions)


def mutation(*, description: str, extensions: list[FieldExtension] | None = None) -> Decorator:
    """``@fields.mutation(description=..., extensions=...)`` for a resolver."""
    return lambda resolver: strawberry.mutation(resolver, description=description, extensions=extensions)


def subscription(*, description: str, extensions: list[FieldExtension] | None = None) -> Decorator:
    """``@fields.subscription(description=..., extensions=...)`` for a resolver."""
    return lambda resolver: strawberry.subscription(resolver, description=description, extensions=extensions)
