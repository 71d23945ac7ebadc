"""``/v1/whoami``: who the caller is to the API (the console shows it and hides what the role
may not do; the API still checks every action)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.bodies import StrictRoute
from api.deps import PrincipalDep, guard
from api.problems import responses
from engine.auth import Role


class WhoAmI(BaseModel):
    """The authenticated caller: its tenant, role and subject (a key id or a token subject)."""

    tenant: str = Field(examples=["acme"])
    role: Role = Field(examples=["operator"])
    subject: str = Field(examples=["key:3f2a9c0d1e4b5a6f"])
    kind: str = Field(examples=["key"], description="key (an API key) or oidc (a token)")


router = APIRouter(prefix="/v1", tags=["session"], route_class=StrictRoute)


@router.get(
    "/whoami",
    response_model=WhoAmI,
    summary="The caller's tenant and role",
    responses=responses(),
    **guard(Role.VIEWER),
)
def whoami(principal: PrincipalDep) -> WhoAmI:
    return WhoAmI(tenant=principal.tenant, role=principal.role, subject=principal.subject, kind=principal.kind)
