"""Trigger models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.convert import to_datetime
from api.schemas.common import ApiModel
from engine.model import WORKFLOW_NAME_PATTERN
from engine.records import TriggerRecord
from engine.trigger_admin import TriggerChanges, TriggerKind

SPEC_EXAMPLES: list[dict[str, Any]] = [{"cron": "*/5 * * * *", "timezone": "UTC"}, {"type": "order.created"}]


class TriggerCreate(ApiModel):
    """A schedule trigger (``cron`` or ``every``) or an event trigger (``type`` + CEL ``match``)."""

    workflow: str = Field(pattern=WORKFLOW_NAME_PATTERN)
    kind: TriggerKind
    spec: dict[str, Any] = Field(examples=SPEC_EXAMPLES)
    input: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class TriggerUpdate(ApiModel):
    """A partial update; absent fields keep their value."""

    workflow: str | None = Field(default=None, pattern=WORKFLOW_NAME_PATTERN)
    spec: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    enabled: bool | None = None

    def changes(self) -> TriggerChanges:
        return TriggerChanges(workflow=self.workflow, spec=self.spec, input=self.input, enabled=self.enabled)


class Trigger(BaseModel):
    """A stored trigger."""

    id: str
    workflow: str
    kind: TriggerKind
    spec: dict[str, Any]
    input: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None = None

    @classmethod
    def from_record(cls, record: TriggerRecord) -> Trigger:
        return cls(**trigger_fields(record))


def trigger_fields(record: TriggerRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "workflow": record.workflow,
        "kind": record.kind,
        "spec": record.spec,
        "input": record.input,
        "enabled": record.enabled,
        "created_at": to_datetime(record.created_at),
        "updated_at": to_datetime(record.updated_at),
        "next_fire_at": to_datetime(record.next_fire_at),
    }
