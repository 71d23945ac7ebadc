"""Trigger models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.common import ApiModel
from engine.model import WORKFLOW_NAME_PATTERN
from engine.records import TriggerRecord
from engine.times import to_datetime
from engine.trigger_admin import TriggerChanges, TriggerKind, next_fires

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


class FireTime(BaseModel):
    """An upcoming fire time of a schedule; ``note`` says how a daylight-saving shift moves it."""

    at: datetime
    note: str | None = None


class Trigger(BaseModel):
    """A stored trigger; for a schedule, also its next fire times and its counters."""

    id: str
    workflow: str
    kind: TriggerKind
    spec: dict[str, Any]
    input: dict[str, Any]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None = None
    next_fires: list[FireTime] = Field(default_factory=list, description="The next 5 fire times (schedules).")
    fired: int | None = Field(
        0,
        description=(
            "Fire times that started an execution (schedules). Null for an event trigger: its starts are"
            " not counted on the trigger, which would make every event's transaction write this one"
            " document; list them with `GET /v1/executions?trigger=<id>`, count them with"
            " `GET /v1/executions/counts?trigger=<id>`."
        ),
    )
    missed: int = Field(0, description="Fire times not started: too late (catch-up window, or `catchup: latest`).")
    skipped: int = Field(
        0,
        description="Fire times dropped by the overlap policy or the tenant's quota (event triggers: starts).",
    )
    buffered: int = Field(0, description="Fire times kept to start when the running execution ends.")
    last_fire_at: datetime | None = None
    last_error: str | None = Field(None, description="Why the last fire started nothing, if it did not.")
    running: list[str] = Field(default_factory=list, description="Active executions this schedule started.")
    pending: list[datetime] = Field(default_factory=list, description="Buffered fire times, oldest first.")

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
        "next_fires": [{"at": to_datetime(fire.at), "note": fire.note} for fire in next_fires(record)],
        "fired": record.fired if record.kind == "schedule" else None,
        "missed": record.missed,
        "skipped": record.skipped,
        "buffered": record.buffered,
        "last_fire_at": to_datetime(record.last_fire_at),
        "last_error": record.last_error,
        "running": list(record.running),
        "pending": [to_datetime(moment) for moment in record.pending],
    }
