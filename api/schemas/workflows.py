"""Workflow models."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.problems import ProblemDetail
from engine.records import WorkflowVersionRecord
from engine.times import to_datetime

DEFINITION_EXAMPLE: dict[str, Any] = {
    "name": "hello",
    "inputs": {"type": "object", "properties": {"who": {"type": "string"}}},
    "steps": [{"id": "greet", "type": "transform", "with": {"value": "${'hello ' + input.who}"}}],
}


class WorkflowSummary(BaseModel):
    """A workflow version without its definition (listings)."""

    name: str = Field(examples=["order-fulfilment"])
    version: int = Field(examples=[3])
    digest: str
    created_at: datetime
    archived: bool

    @classmethod
    def from_record(cls, record: WorkflowVersionRecord) -> WorkflowSummary:
        return cls(**workflow_fields(record))


class WorkflowVersion(WorkflowSummary):
    """One immutable, numbered version of a workflow, with its definition."""

    definition: dict[str, Any] = Field(examples=[DEFINITION_EXAMPLE])

    @classmethod
    def from_record(cls, record: WorkflowVersionRecord) -> WorkflowVersion:
        return cls(**workflow_fields(record), definition=record.definition)


def workflow_fields(record: WorkflowVersionRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "version": record.version,
        "digest": record.digest,
        "created_at": to_datetime(record.created_at),
        "archived": record.archived,
    }


class ValidationReport(BaseModel):
    """The outcome of validating a definition without saving it."""

    valid: bool
    name: str | None = None
    order: list[str] = Field(default_factory=list, description="Steps in a topological order")
    problems: list[ProblemDetail] = Field(default_factory=list)
