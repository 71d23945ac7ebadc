"""``ApiKey``: a key of the caller's tenant (its secret is shown only when created)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.graphql.types.enums import Role
from api.schemas.keys import ApiKey as ApiKeyModel
from engine.records import ApiKeyRecord


@strawberry.type
class ApiKey:
    id: strawberry.ID
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None
    revoked: bool

    @classmethod
    def from_record(cls, record: ApiKeyRecord) -> ApiKey:
        return cls(**ApiKeyModel.from_record(record).model_dump())


@strawberry.type(description="A new key; `token` is shown only here")
class CreatedApiKey:
    key: ApiKey
    token: str
