"""Principals and roles: who is calling, for which tenant, allowed to do what.

Roles are ordered, each including the ones below it::

    viewer < operator (start, cancel, retry, signal) < editor (workflows, triggers) < admin (keys)

The tenant of every request comes from its principal, never from the request itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine.errors import AuthenticationFailed, PermissionDenied

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class Role(StrEnum):
    """What a principal may do; a higher role may do everything a lower one may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, required: Role) -> bool:
        """True when this role includes ``required``."""
        return self.rank >= required.rank


_RANKS = {role: rank for rank, role in enumerate(Role)}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``subject`` names the caller for logs (a key id or a token subject); ``key_id`` is set
    for API keys and keys the per-key rate limit.
    """

    tenant: str
    role: Role
    subject: str
    kind: str
    key_id: str | None = None
    #: When the credential stops being valid (epoch seconds), if it expires.
    expires_at: float | None = None

    @property
    def rate_key(self) -> str:
        """The identity rate limits are counted against (one bucket per key or subject)."""
        return f"{self.kind}:{self.key_id or self.subject}"

    def require(self, role: Role) -> None:
        """Raise ``PermissionDenied`` unless this principal's role includes ``role``."""
        if not self.role.allows(role):
            raise PermissionDenied(f"this action needs the {role} role; the caller is {self.role}")


def check_tenant(tenant: str) -> str:
    """Validate a tenant name (lowercase letters, digits, ``_ . -``; at most 63 characters)."""
    if not TENANT_PATTERN.match(tenant):
        raise ValueError(f"invalid tenant name {tenant!r}")
    return tenant


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"unknown role {value!r}; expected one of {', '.join(Role)}") from None


def principal_from_claims(claims: Mapping[str, Any], *, tenant_claim: str, role_claim: str) -> Principal:
    """Map verified JWT claims to a principal.

    A token without a role claim gets the least privilege (viewer); a token without a valid
    tenant claim is refused, because the tenant must never be guessed.
    """
    tenant = claims.get(tenant_claim)
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise AuthenticationFailed(f"the token carries no valid {tenant_claim!r} claim")
    raw_role = claims.get(role_claim, Role.VIEWER.value)
    try:
        role = parse_role(str(raw_role))
    except ValueError as exc:
        raise AuthenticationFailed(str(exc)) from None
    subject = str(claims.get("sub") or claims.get("email") or "unknown")
    expiry = claims.get("exp")
    expires_at = float(expiry) if isinstance(expiry, int | float) else None
    return Principal(tenant=tenant, role=role, subject=subject, kind="oidc", expires_at=expires_at)


def anonymous_admin(tenant: str = "default") -> Principal:
    """The principal used when authentication is switched off (local development only)."""
    return Principal(tenant=tenant, role=Role.ADMIN, subject="anonymous", kind="anonymous")
