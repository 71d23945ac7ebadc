"""Request and response models of ``/v1/prompts`` (tenants' stored prompt templates)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.common import ApiModel
from engine.prompts import MAX_TEMPLATE_CHARS, PromptRecord
from engine.times import to_datetime


class PromptBody(ApiModel):
    """The texts of a new prompt version. Templates use ``${...}`` like any step config."""

    template: str = Field(
        min_length=1, max_length=MAX_TEMPLATE_CHARS, examples=["Order ${input.order_id}: ${input.message}"]
    )
    system: str | None = Field(default=None, max_length=MAX_TEMPLATE_CHARS, examples=["You are a support agent."])
    description: str | None = Field(default=None, max_length=1000)


class PromptVersion(BaseModel):
    """One immutable, numbered version of a prompt."""

    name: str = Field(examples=["support-reply"])
    version: int = Field(examples=[2])
    template: str
    system: str | None = None
    description: str | None = None
    created_at: datetime

    @classmethod
    def from_record(cls, record: PromptRecord) -> PromptVersion:
        return cls(**prompt_fields(record))


def prompt_fields(record: PromptRecord) -> dict[str, Any]:
    """A stored prompt version's fields as both APIs show them."""
    fields = {key: getattr(record, key) for key in ("name", "version", "template", "system", "description")}
    return {**fields, "created_at": to_datetime(record.created_at)}
