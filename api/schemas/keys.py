"""API key models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.schemas.common import ApiModel
from engine.auth import Role
from engine.records import ApiKeyRecord
from engine.times import to_datetime


class KeyCreate(ApiModel):
    """A new key for the caller's tenant."""

    name: str = Field(min_length=1, max_length=100, examples=["ci-deployer"])
    role: Role = Role.VIEWER
    ttl_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 24 * 3600, description="Lifetime")


class ApiKey(BaseModel):
    """A key as listed: its secret is never shown again."""

    id: str
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None = None
    revoked: bool

    @classmethod
    def from_record(cls, record: ApiKeyRecord) -> ApiKey:
        return cls(
            id=record.id,
            name=record.name,
            role=Role(record.role),
            created_at=to_datetime(record.created_at),
            expires_at=to_datetime(record.expires_at),
            revoked=record.revoked,
        )


class CreatedApiKey(ApiKey):
    """A newly created key; ``token`` is shown only in this response."""

    token: str = Field(examples=["cvk_0123456789abcdef_…"])
