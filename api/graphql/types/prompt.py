"""``PromptVersion``: one immutable version of a tenant's stored prompt template."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.schemas.prompts import prompt_fields
from engine.prompts import PromptRecord


@strawberry.type(description="One version of a stored prompt template")
class PromptVersion:
    name: str
    version: int
    template: str
    system: str | None
    description: str | None
    created_at: datetime

    @classmethod
    def from_record(cls, record: PromptRecord) -> PromptVersion:
        return cls(**prompt_fields(record))


@strawberry.type(description="The result of saving a prompt: created is false when the texts were unchanged")
class AppliedPrompt:
    prompt: PromptVersion
    created: bool


@strawberry.type
class PromptPage:
    items: list[PromptVersion]
    next_cursor: str | None


@strawberry.type(description="Whether a reward was counted (false: that decision was rewarded before)")
class RewardResult:
    counted: bool
