"""``WorkflowVersion``: one immutable version of a workflow."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from api.schemas.workflows import workflow_fields
from engine.records import WorkflowVersionRecord


@strawberry.type
class WorkflowVersion:
    name: str
    version: int
    digest: str
    created_at: datetime
    archived: bool
    definition: JSON

    @classmethod
    def from_record(cls, record: WorkflowVersionRecord) -> WorkflowVersion:
        return cls(**workflow_fields(record), definition=JSON(record.definition))


@strawberry.type
class AppliedWorkflow:
    """The result of applying a definition: ``created`` is false when it was unchanged."""

    workflow: WorkflowVersion
    created: bool
