"""``/v1/executions/bulk/*``: cancel or retry many executions in one request (the console's bulk actions).

Each id goes through the same use case as its single-execution route (``Service.cancel``,
``Service.retry``) in the caller's tenant, and gets its own result: the execution's new
status, or the problem its single route would have answered with. The request succeeds
(200) even when some ids fail; only a malformed body is refused as a whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from api import actions
from api.bodies import StrictRoute
from api.deps import PrincipalDep, RuntimeDep, guard
from api.problems import Problem, error_detail_text, error_details, problem_body, responses
from api.runtime import Runtime
from api.schemas.common import ApiModel
from engine.auth import Principal, Role
from engine.records import ExecutionRecord
from engine.states import ExecutionStatus

router = APIRouter(prefix="/v1/executions/bulk", tags=["executions"], route_class=StrictRoute)

ExecutionIdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class BulkIds(ApiModel):
    """The executions to act on, in order (at most 100)."""

    ids: list[ExecutionIdText] = Field(min_length=1, max_length=actions.MAX_BULK, examples=[["4f1c2e0a9b8d4c7e"]])


class BulkItem(BaseModel):
    """One id's result: ``ok`` with the execution's status after the action, or the problem."""

    id: str
    ok: bool
    status: ExecutionStatus | None = Field(default=None, description="After the action, when ok")
    problem: Problem | None = Field(default=None, description="Why not, when not ok (as the single route says)")


class BulkResult(BaseModel):
    results: list[BulkItem]
    succeeded: int
    failed: int


def _run(
    rt: Runtime, principal: Principal, action: Callable[[str, str], ExecutionRecord], ids: list[str]
) -> BulkResult:
    items = []
    for outcome in actions.control_many(rt, principal, action, ids):
        if outcome.execution is not None:
            items.append(BulkItem(id=outcome.id, ok=True, status=outcome.execution.status))
            continue
        assert outcome.error is not None
        exc = outcome.error
        body: dict[str, Any] = problem_body(exc.status, exc.code, error_detail_text(exc), problems=error_details(exc))
        items.append(BulkItem(id=outcome.id, ok=False, problem=Problem.model_validate(body)))
    succeeded = sum(1 for item in items if item.ok)
    return BulkResult(results=items, succeeded=succeeded, failed=len(items) - succeeded)


@router.post(
    "/cancel",
    response_model=BulkResult,
    response_model_exclude_none=True,
    summary="Cancel many executions (at most 100), each on its own",
    responses=responses(),
    **guard(Role.OPERATOR),
)
async def bulk_cancel(rt: RuntimeDep, principal: PrincipalDep, body: BulkIds) -> BulkResult:
    return await run_in_threadpool(_run, rt, principal, rt.service.cancel, body.ids)


@router.post(
    "/retry",
    response_model=BulkResult,
    response_model_exclude_none=True,
    summary="Retry many failed or timed-out executions (at most 100), each on its own",
    responses=responses(),
    **guard(Role.OPERATOR),
)
async def bulk_retry(rt: RuntimeDep, principal: PrincipalDep, body: BulkIds) -> BulkResult:
    return await run_in_threadpool(_run, rt, principal, rt.service.retry, body.ids)
