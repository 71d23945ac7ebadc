"""``whoami``: the caller's tenant and role (as ``GET /v1/whoami``)."""

from __future__ import annotations

import strawberry

from api.graphql.types.enums import Role


@strawberry.type(description="The authenticated caller")
class WhoAmI:
    tenant: str
    role: Role
    subject: str
    kind: str
