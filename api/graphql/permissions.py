"""Role guards for GraphQL fields: every root field declares the role it needs."""

from __future__ import annotations

from typing import Any

from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types import Info

from engine.auth import Role


class HasRole(BasePermission):
    """Allows the field when the caller's role includes ``role``."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.message = f"this field needs the {role} role"

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        # Unauthenticated callers never get here (HTTP: refused with 401 when the context is
        # built; WebSocket: refused at connection_init), but an unset principal still fails closed.
        context = info.context
        return bool(context.authenticated and context.principal.role.allows(self.role))


def requires(role: Role) -> list[FieldExtension]:
    """Field ``extensions`` guarding it with ``role`` (the guard tests look for this)."""
    return [PermissionExtension(permissions=[HasRole(role)], use_directives=False)]
