"""``/approval-links/{token}``: decide an approval with a signed link, without credentials.

Outside ``/v1`` on purpose: the token is the credential (an HMAC over tenant, execution,
step and the step's lease epoch, issued by someone allowed to decide). ``GET`` only
describes the link, so a mail client previewing it decides nothing; ``POST`` decides, once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from api.bodies import JsonBodyRoute
from api.deps import RuntimeDep
from api.problems import responses
from api.schemas.executions import ApprovalDecision, ApprovalLinkInfo, Step
from engine.times import to_datetime

router = APIRouter(prefix="/approval-links", tags=["approvals"], route_class=JsonBodyRoute)

Token = Annotated[str, Path(min_length=16, max_length=2048, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")]


@router.get("/{token}", response_model=ApprovalLinkInfo, summary="What a link decides", responses=responses(401, 422))
def describe_link(rt: RuntimeDep, token: Token) -> ApprovalLinkInfo:
    claims = rt.service.approval_links.verify(token)
    return ApprovalLinkInfo(
        execution_id=claims.execution_id,
        step=claims.step_key,
        recipient=claims.by,
        expires_at=to_datetime(claims.expires_at),
    )


@router.post(
    "/{token}", response_model=Step, summary="Decide an approval with a link", responses=responses(401, 409, 422)
)
async def decide_by_link(rt: RuntimeDep, token: Token, body: ApprovalDecision) -> Step:
    record = await run_in_threadpool(rt.service.approval_links.decide, token, body.decision == "approve", body.comment)
    return Step.from_record(record)
