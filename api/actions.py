"""Use-case calls shared by REST and GraphQL, so both answer the same way.

Each function takes the runtime and the caller's principal, calls the engine's
:class:`~engine.service.Service` (or a use-case module) with the principal's tenant, and
returns engine records; REST and GraphQL only convert the result. Role checks happen at
the edge (route guards, GraphQL permissions), tenancy here: the tenant always comes from
the principal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from api.problems import ProblemDetail
from api.runtime import Runtime
from api.schemas.executions import StartExecution
from api.schemas.triggers import TriggerCreate
from api.schemas.workflows import ValidationReport
from engine.auth import Principal
from engine.errors import ConveyorError, DefinitionInvalid, InvalidRequest
from engine.eventlog import Accepted
from engine.orchestration.approvals import Decision, LinkClaims
from engine.records import ExecutionRecord, StepRecord, TriggerRecord
from engine.service import ApplyResult, StartResult
from engine.trigger_admin import Triggers

MAX_IDEMPOTENCY_KEY = 255
MAX_APPROVAL_COMMENT = 2000
#: Most executions one bulk request (REST ``/v1/executions/bulk/*``, GraphQL batch mutations) names.
MAX_BULK = 100


class IdempotencyKeyReused(InvalidRequest):
    """An ``Idempotency-Key`` was sent again with a different request."""

    code = "idempotency-key-reused"


def apply_workflow(rt: Runtime, principal: Principal, name: str | None, definition: dict[str, Any]) -> ApplyResult:
    """Save a definition as a new version; the name in the path must match the document's."""
    document = dict(definition)
    if name is not None:
        given = document.setdefault("name", name)
        if given != name:
            raise InvalidRequest(f"the definition is named {given!r} but was sent to {name!r}")
    return rt.service.apply_workflow(principal.tenant, document)


def validate_workflow(rt: Runtime, definition: dict[str, Any]) -> ValidationReport:
    """Validate without saving; definition problems are a report, not an error."""
    try:
        compiled = rt.service.validate_workflow(definition)
    except DefinitionInvalid as exc:
        problems = [ProblemDetail(path=p.path, message=p.message) for p in exc.problems]
        if not problems:
            problems = [ProblemDetail(path="", message=exc.message)]
        name = definition.get("name")
        return ValidationReport(valid=False, name=name if isinstance(name, str) else None, problems=problems)
    return ValidationReport(valid=True, name=compiled.name, order=list(compiled.order))


def start_execution(
    rt: Runtime, principal: Principal, request: StartExecution, idempotency_key: str | None = None
) -> StartResult:
    """Start (or, for a repeated idempotency key, find) an execution, within the tenant's quota."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    result = rt.service.start(
        principal.tenant,
        request.workflow,
        request.input,
        version=request.version,
        idempotency_key=idempotency_key,
        labels=dict(request.labels),
        enforce_quota=True,
    )
    if result.created:
        rt.metrics.starts.inc()
    else:
        _check_same_request(result.execution, request)
    return result


def _check_same_request(existing: ExecutionRecord, request: StartExecution) -> None:
    same = (
        existing.workflow == request.workflow
        and (request.version is None or existing.version == request.version)
        and existing.input == request.input
    )
    if not same:
        # IETF draft "The Idempotency-Key HTTP Header Field": reuse with another payload is a 422.
        raise IdempotencyKeyReused(f"this Idempotency-Key was used for another request (execution {existing.id})")


@dataclass(frozen=True)
class ExecutionView:
    execution: ExecutionRecord
    steps: list[StepRecord]


def execution_with_steps(rt: Runtime, principal: Principal, execution_id: str) -> ExecutionView:
    execution = rt.service.get_execution(principal.tenant, execution_id)
    # Service.list_steps would read the header again only to check it exists; it was just read.
    return ExecutionView(execution, rt.service.store.list_steps(principal.tenant, execution_id))


def triggers(rt: Runtime) -> Triggers:
    return Triggers(rt.service.store, rt.service.clock)


def create_trigger(rt: Runtime, principal: Principal, body: TriggerCreate) -> TriggerRecord:
    """Create a trigger in the principal's tenant."""
    return triggers(rt).create(
        principal.tenant,
        workflow=body.workflow,
        kind=body.kind,
        spec=body.spec,
        input=body.input,
        enabled=body.enabled,
    )


def publish_event(
    rt: Runtime,
    principal: Principal,
    *,
    type: str,
    data: dict[str, Any],
    event_id: str | None,
    source: str | None,
    correlation_key: str | None = None,
) -> Accepted:
    """Accept an event into the tenant's event log and route it (see :mod:`engine.router`)."""
    return rt.router.publish(
        principal.tenant, type=type, data=data, event_id=event_id, source=source, correlation_key=correlation_key
    )


def decide_approval(
    rt: Runtime, principal: Principal, execution_id: str, step_key: str, decision: str, comment: str | None, via: str
) -> StepRecord:
    """Approve or reject an approval step as ``principal`` (the step's ``roles`` decide who may)."""
    if comment is not None and len(comment) > MAX_APPROVAL_COMMENT:
        raise InvalidRequest(f"an approval comment has at most {MAX_APPROVAL_COMMENT} characters")
    return rt.service.decide_approval(
        principal.tenant,
        execution_id,
        step_key,
        Decision(decision == "approve", principal.subject, str(principal.role), comment, via=via),
    )


def approval_link(
    rt: Runtime, principal: Principal, execution_id: str, step_key: str, recipient: str, ttl: float | None
) -> tuple[str, LinkClaims]:
    """A signed single-use link for ``recipient``; only a principal who may decide can issue one."""
    return rt.service.approval_links.issue(
        principal.tenant, execution_id, step_key, role=str(principal.role), by=recipient, ttl=ttl
    )


@dataclass(frozen=True)
class BulkOutcome:
    """What one id of a bulk request came to: the execution after the action, or the error."""

    id: str
    execution: ExecutionRecord | None = None
    error: ConveyorError | None = None


def check_bulk(items: Sequence[Any]) -> None:
    if len(items) > MAX_BULK:
        raise InvalidRequest(f"a batch holds at most {MAX_BULK} items")


def control_many(
    rt: Runtime, principal: Principal, action: Callable[[str, str], ExecutionRecord], ids: Sequence[str]
) -> list[BulkOutcome]:
    """Apply one single-execution use case (``rt.service.cancel``, ``.retry``) to each id, in order.

    Each id succeeds or fails on its own (one refused transition does not stop the others);
    every call runs in the principal's tenant, so another tenant's id is simply not found.
    """
    check_bulk(ids)
    outcomes = []
    for execution_id in ids:
        try:
            outcomes.append(BulkOutcome(execution_id, execution=action(principal.tenant, execution_id)))
        except ConveyorError as exc:
            outcomes.append(BulkOutcome(execution_id, error=exc))
    return outcomes
