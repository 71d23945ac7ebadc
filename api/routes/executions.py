"""``/v1/executions``: start, list, get, history, cancel, delete, retry, pause, resume, signal, approvals."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api import actions
from api.bodies import StrictRoute
from api.convert import IsoDatetime, search_filters
from api.deps import PageDep, PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.common import Page
from api.schemas.executions import (
    ApprovalDecision,
    ApprovalLink,
    ApprovalLinkRequest,
    Event,
    Execution,
    ExecutionCounts,
    ExecutionDetail,
    Signal,
    StartExecution,
    Step,
)
from api.schemas.steplogs import StepLogPage
from engine.auth import Role
from engine.model import WORKFLOW_NAME_PATTERN
from engine.search import MAX_LABELS
from engine.states import ExecutionStatus
from engine.times import to_datetime

router = APIRouter(prefix="/v1/executions", tags=["executions"], route_class=StrictRoute)

ExecutionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", examples=["4f1c2e0a9b8d4c7e8f6a5b4c3d2e1f00"])]
StepKey = Annotated[str, Path(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\[[0-9]{1,6}\])?$", examples=["review"])]
IDEMPOTENCY_DOC = (
    "Makes the start idempotent: repeating a request with the same key returns the same execution "
    "(status 200 and `Idempotent-Replayed: true`); reusing it for another request is a 422."
)


@router.post(
    "",
    response_model=Execution,
    status_code=201,
    summary="Start an execution",
    responses={200: {"model": Execution, "description": "Replayed: the execution this key started"}, **responses(404)},
    **guard(Role.OPERATOR),
)
async def start(
    rt: RuntimeDep,
    principal: PrincipalDep,
    body: StartExecution,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255, description=IDEMPOTENCY_DOC)
    ] = None,
) -> Execution:
    # The hot path: one explicit thread-pool hop for the blocking use case. A sync handler
    # would cost two (FastAPI also serializes a sync handler's response in the pool).
    result = await run_in_threadpool(actions.start_execution, rt, principal, body, idempotency_key)
    response.headers["Location"] = f"/v1/executions/{result.execution.id}"
    if not result.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return Execution.from_record(result.execution)


class SearchParams:
    """The filters of ``GET /v1/executions`` and ``/counts``; every filter given must match (AND)."""

    def __init__(
        self,
        workflow: Annotated[str | None, Query(pattern=WORKFLOW_NAME_PATTERN)] = None,
        version: Annotated[int | None, Query(ge=1, description="A version of `workflow` (requires it)")] = None,
        label: Annotated[
            list[str] | None,
            Query(
                description="`key:value`, split on the first `:`; repeat it to require several labels "
                f"(at most {MAX_LABELS})",
                examples=[["team:shop", "env:prod"]],
            ),
        ] = None,
        trigger: Annotated[
            str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Started by this trigger (its id)")
        ] = None,
        created_after: Annotated[IsoDatetime | None, Query(description="Inclusive")] = None,
        created_before: Annotated[IsoDatetime | None, Query(description="Exclusive")] = None,
    ) -> None:
        self.filters = search_filters(workflow, version, label, trigger, created_after, created_before)


SearchDep = Annotated[SearchParams, Depends()]


@router.get(
    "",
    response_model=Page[Execution],
    summary="List executions, newest first",
    description="Filters combine with AND. A malformed label or a `version` without `workflow` is a 400.",
    responses=responses(),
    **guard(Role.VIEWER),
)
def list_executions(
    rt: RuntimeDep,
    principal: PrincipalDep,
    page: PageDep,
    search: SearchDep,
    status: ExecutionStatus | None = None,
) -> Page[Execution]:
    found = rt.service.list_executions(
        principal.tenant, status=status, cursor=page.cursor, limit=page.limit, **search.filters
    )
    return Page(items=[Execution.from_record(r) for r in found.items], next_cursor=found.next_cursor)


@router.get(
    "/counts",
    response_model=ExecutionCounts,
    summary="Count executions per status",
    description="The filters of the listing but `status`; every status is counted, 0 when none.",
    responses=responses(),
    **guard(Role.VIEWER),
)
def count_executions(rt: RuntimeDep, principal: PrincipalDep, search: SearchDep) -> ExecutionCounts:
    return ExecutionCounts.build(rt.service.count_executions(principal.tenant, **search.filters))


@router.get(
    "/{execution_id}",
    response_model=ExecutionDetail,
    summary="Get an execution with its steps",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def get_execution(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId) -> ExecutionDetail:
    view = actions.execution_with_steps(rt, principal, execution_id)
    return ExecutionDetail.build(view.execution, view.steps)


@router.get(
    "/{execution_id}/steps",
    response_model=list[Step],
    summary="The steps of an execution",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def list_steps(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId) -> list[Step]:
    return [Step.from_record(s) for s in rt.service.list_steps(principal.tenant, execution_id)]


@router.get(
    "/{execution_id}/history",
    response_model=Page[Event],
    summary="The history (events) of an execution",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def history(
    rt: RuntimeDep,
    principal: PrincipalDep,
    execution_id: ExecutionId,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(max_length=64, description="An event id: events after it")] = None,
) -> Page[Event]:
    found = rt.service.list_events(principal.tenant, execution_id, after=after, limit=limit)
    return Page(items=[Event.from_record(e) for e in found.items], next_cursor=found.next_cursor)


@router.get(
    "/{execution_id}/steps/{step_key}/logs",
    response_model=StepLogPage,
    summary="What a step's finished attempts logged and printed",
    description=(
        "Lines in order of run, attempt and `seq`; an attempt's logs are stored when it ends (a running "
        "attempt's lines arrive as `step.log` events on the execution's live streams). Each attempt keeps "
        "at most `CONVEYOR_STEP_LOGS_MAX_LINES` lines; `attempts[].dropped` counts the rest."
    ),
    responses=responses(404),
    **guard(Role.VIEWER),
)
def step_logs(
    rt: RuntimeDep,
    principal: PrincipalDep,
    execution_id: ExecutionId,
    step_key: StepKey,
    run: Annotated[int | None, Query(ge=1, description="Only this run of the execution")] = None,
    attempt: Annotated[int | None, Query(ge=1, description="Only this attempt (of every run, unless `run`)")] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=128, pattern=r"^[A-Za-z0-9_-]+={0,2}$", description="`next_cursor` of the previous page"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Lines per page")] = 200,
) -> StepLogPage:
    page = rt.service.step_logs_page(
        principal.tenant, execution_id, step_key, run=run, attempt=attempt, cursor=cursor, limit=limit
    )
    return StepLogPage.build(page)


@router.post(
    "/{execution_id}/cancel",
    response_model=Execution,
    summary="Cancel an execution",
    responses=responses(404, 409),
    **guard(Role.OPERATOR),
)
def cancel(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId) -> Execution:
    return Execution.from_record(rt.service.cancel(principal.tenant, execution_id))


@router.delete(
    "/{execution_id}",
    status_code=204,
    summary="Delete a finished execution with everything derived from it",
    description="Steps, history, payloads, step logs, agent checkpoints and the memory notes it wrote go with it, "
    "and its children (subworkflows) too; its idempotency key is free again. Only a terminal execution can be "
    "deleted (409 otherwise). Finished executions are also deleted by the reconciler once their retention "
    "(`CONVEYOR_EXECUTION_RETENTION_DAYS`, or the workflow's `retention:`) has passed.",
    responses=responses(404, 409),
    **guard(Role.OPERATOR),
)
def delete_execution(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId) -> Response:
    rt.service.delete_execution(principal.tenant, execution_id)
    return Response(status_code=204)


@router.post(
    "/{execution_id}/retry",
    response_model=Execution,
    summary="Retry a failed or timed-out execution from its failed steps",
    responses=responses(404, 409),
    **guard(Role.OPERATOR),
)
def retry(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId) -> Execution:
    return Execution.from_record(rt.service.retry(principal.tenant, execution_id))


@router.post(
    "/{execution_id}/pause",
    response_model=Execution,
    summary="Pause: no new steps are claimed",
    responses=responses(404, 409),
    **guard(Role.OPERATOR),
)
def pause(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId) -> Execution:
    return Execution.from_record(rt.service.pause(principal.tenant, execution_id))


@router.post(
    "/{execution_id}/resume",
    response_model=Execution,
    summary="Resume a paused execution",
    responses=responses(404, 409),
    **guard(Role.OPERATOR),
)
def resume(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId) -> Execution:
    return Execution.from_record(rt.service.resume(principal.tenant, execution_id))


@router.post(
    "/{execution_id}/signal",
    response_model=Step,
    summary="Deliver a payload to a waiting step",
    responses=responses(404, 409),
    **guard(Role.OPERATOR),
)
def signal(rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId, body: Signal) -> Step:
    return Step.from_record(rt.service.signal(principal.tenant, execution_id, body.step, body.payload))


@router.post(
    "/{execution_id}/steps/{step_key}/approval",
    response_model=Step,
    summary="Approve or reject a waiting approval step",
    description=(
        "Any authenticated role may call this; the step's `roles` decide who may actually decide "
        "(403 otherwise). The decision, its author, time and comment become the step's output."
    ),
    responses=responses(403, 404, 409),
    **guard(Role.VIEWER),
)
def decide_approval(
    rt: RuntimeDep, principal: PrincipalDep, execution_id: ExecutionId, step_key: StepKey, body: ApprovalDecision
) -> Step:
    record = actions.decide_approval(rt, principal, execution_id, step_key, body.decision, body.comment, "rest")
    return Step.from_record(record)


@router.post(
    "/{execution_id}/steps/{step_key}/approval-link",
    response_model=ApprovalLink,
    status_code=201,
    summary="Issue a signed single-use link that decides an approval step",
    description=(
        "Only a principal who may decide the step can issue a link. The link is bound to the step's "
        "current wait: it works once, and not after the step runs again. Needs CONVEYOR_APPROVAL_LINK_SECRET."
    ),
    responses=responses(403, 404, 409, 422),
    **guard(Role.VIEWER),
)
def approval_link(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    execution_id: ExecutionId,
    step_key: StepKey,
    body: ApprovalLinkRequest,
) -> ApprovalLink:
    token, claims = actions.approval_link(rt, principal, execution_id, step_key, body.recipient, body.ttl_seconds)
    return ApprovalLink(
        token=token,
        url=str(request.url_for("decide_by_link", token=token)),
        execution_id=claims.execution_id,
        step=claims.step_key,
        recipient=claims.by,
        expires_at=to_datetime(claims.expires_at),
    )
