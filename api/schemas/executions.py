"""Execution, step and event models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from api.schemas.common import LABEL_KEY, ApiModel
from api.visibility import visible_error, visible_event_data
from engine.model import STEP_ID_PATTERN, WORKFLOW_NAME_PATTERN
from engine.orchestration import planner
from engine.records import EventRecord, ExecutionRecord, StepRecord
from engine.search import MAX_LABEL_VALUE, MAX_LABELS
from engine.states import ExecutionStatus, StepStatus
from engine.times import to_datetime

LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY)]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE)]


class StartExecution(ApiModel):
    """Start a workflow; the input is validated against the version's input schema."""

    workflow: str = Field(pattern=WORKFLOW_NAME_PATTERN, examples=["order-fulfilment"])
    version: int | None = Field(default=None, ge=1, description="Latest version when absent")
    input: dict[str, Any] = Field(default_factory=dict, examples=[{"order_id": "A-1001"}])
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        examples=[{"team": "shop"}],
        # Keys outside the pattern are refused: say so (patternProperties alone would allow them).
        json_schema_extra={"additionalProperties": False},
    )


class Signal(ApiModel):
    """Deliver a payload to a WAITING step; the step succeeds with it as its output."""

    step: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\[[0-9]{1,6}\])?$", examples=["review"])
    payload: Any = Field(default=None, examples=[{"approved": True}])


class Execution(BaseModel):
    """The header of one execution."""

    id: str
    workflow: str
    version: int
    status: ExecutionStatus
    input: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    run: int
    labels: dict[str, str]
    idempotency_key: str | None = None
    parent: dict[str, Any] | None = None
    trigger_id: str | None = Field(default=None, description="The trigger (schedule or event) that started it")
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    deadline_at: datetime | None = None
    expires_at: datetime | None = Field(
        default=None,
        description="When the reconciler deletes this finished execution (its retention); "
        "null while it is active or when it is kept forever",
    )

    @classmethod
    def from_record(cls, record: ExecutionRecord) -> Execution:
        return cls(**execution_fields(record))


def execution_fields(record: ExecutionRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "workflow": record.workflow,
        "version": record.version,
        "status": record.status,
        "input": record.input,
        "output": record.output,
        "error": visible_error(record.error),
        "run": record.run,
        "labels": record.labels,
        "idempotency_key": record.idempotency_key,
        "parent": record.parent,
        "trigger_id": record.trigger_id,
        "created_at": to_datetime(record.created_at),
        "updated_at": to_datetime(record.updated_at),
        "finished_at": to_datetime(record.finished_at),
        "deadline_at": to_datetime(record.deadline_at),
        "expires_at": to_datetime(record.expires_at),
    }


class ExecutionCounts(BaseModel):
    """How many executions match the filters, per status (every status present)."""

    counts: dict[ExecutionStatus, int] = Field(examples=[{"RUNNING": 3, "SUCCEEDED": 40, "FAILED": 2}])
    total: int

    @classmethod
    def build(cls, counts: dict[ExecutionStatus, int]) -> ExecutionCounts:
        return cls(counts=counts, total=sum(counts.values()))


class Step(BaseModel):
    """One step (or one foreach item) of an execution."""

    key: str = Field(examples=["ship[3]"])
    step_id: str = Field(pattern=STEP_ID_PATTERN)
    status: StepStatus
    attempt: int
    run: int
    index: int | None = None
    item: Any = None
    item_count: int | None = Field(default=None, description="How many items an expanded foreach step has")
    output: Any = None
    error: dict[str, Any] | None = None
    wait: dict[str, Any] | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_record(cls, record: StepRecord) -> Step:
        return cls(**step_fields(record))


def step_fields(record: StepRecord) -> dict[str, Any]:
    return {
        "key": record.key,
        "step_id": record.step_id,
        "status": record.status,
        "attempt": record.attempt,
        "run": record.run,
        "index": record.index,
        "item": record.item,
        "item_count": planner.item_count(record) if record.index is None else None,
        "output": record.output,
        "error": visible_error(record.error),
        "wait": record.wait,
        "created_at": to_datetime(record.created_at or None),
        "started_at": to_datetime(record.started_at),
        "finished_at": to_datetime(record.finished_at),
    }


class ExecutionDetail(Execution):
    """An execution with its steps."""

    steps: list[Step]

    @classmethod
    def build(cls, record: ExecutionRecord, steps: list[StepRecord]) -> ExecutionDetail:
        return cls(**execution_fields(record), steps=[Step.from_record(s) for s in steps])


class Event(BaseModel):
    """One entry of an execution's history."""

    id: str
    type: str = Field(examples=["step.succeeded"])
    at: datetime
    step_key: str | None = None
    status: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_record(cls, record: EventRecord) -> Event:
        return cls(**event_fields(record))


def event_fields(record: EventRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "type": record.type,
        "at": to_datetime(record.at),
        "step_key": record.step_key,
        "status": record.status,
        "attempt": record.attempt,
        "data": visible_event_data(record.data),
    }


class ApprovalDecision(ApiModel):
    """Approve or reject a waiting ``approval`` step."""

    decision: Literal["approve", "reject"] = Field(examples=["approve"])
    comment: str | None = Field(default=None, max_length=2000, examples=["checked the invoice"])  # MAX_APPROVAL_COMMENT


class ApprovalLinkRequest(ApiModel):
    """Ask for a signed single-use link that decides an approval on behalf of ``recipient``."""

    recipient: str = Field(min_length=1, max_length=200, examples=["alice@example.com"])
    ttl_seconds: float | None = Field(default=None, gt=0, description="Capped by CONVEYOR_APPROVAL_LINK_TTL")


class ApprovalLink(BaseModel):
    """A signed link: POST an ``ApprovalDecision`` to ``url`` (no credentials needed) once."""

    token: str
    url: str
    execution_id: str
    step: str
    recipient: str
    expires_at: datetime


class ApprovalLinkInfo(BaseModel):
    """What a link decides (``GET`` on the link; changes nothing)."""

    execution_id: str
    step: str
    recipient: str
    expires_at: datetime
