"""External event models."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.schemas.common import ApiModel
from engine.eventlog import Accepted
from engine.records import DeadLetterRecord
from engine.times import to_datetime


class PublishEvent(ApiModel):
    """An external event. Give ``id`` to make publishing idempotent (retries are acknowledged once)."""

    type: str = Field(min_length=1, max_length=200, examples=["order.created"])
    data: dict[str, Any] = Field(default_factory=dict, examples=[{"order_id": "A-1001", "total": 120}])
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    source: str | None = Field(default=None, max_length=200, examples=["shop"])
    correlation_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        examples=["A-1001"],
        description="Resumes the `wait_for_event` steps waiting for this type with this correlation key",
    )


class EventAccepted(BaseModel):
    """The acknowledgement of a published event; routing to triggers happens asynchronously."""

    id: str
    type: str
    received_at: datetime
    duplicate: bool = Field(description="True when an event with this id had already been accepted")

    @classmethod
    def from_result(cls, accepted: Accepted) -> EventAccepted:
        return cls(
            id=accepted.event.id,
            type=accepted.event.type,
            received_at=to_datetime(accepted.event.accepted_at),
            duplicate=accepted.duplicate,
        )


class DeadLetter(BaseModel):
    """A message the Pub/Sub bridge could not turn into an event, and why."""

    message_id: str
    subscription: str
    reason: str = Field(examples=["malformed"], description="malformed, unroutable, too-large or attempts-exhausted")
    detail: str = Field(examples=["the message data is not a JSON object"])
    at: datetime
    attributes: dict[str, str]
    data: str = Field(description="The message body as text, at most its first 4 KiB")
    data_bytes: int = Field(description="The size of the whole body")

    @classmethod
    def from_record(cls, record: DeadLetterRecord) -> DeadLetter:
        fields = dataclasses.asdict(record)
        fields.pop("tenant")
        return cls(**{**fields, "at": to_datetime(record.at)})


class DeadLetters(BaseModel):
    items: list[DeadLetter] = Field(description="Most recent first")
