"""Routing decisions that learn: rewards for bandit decisions, and what a bandit has learned.

``POST /v1/executions/{id}/rewards`` rewards the decision one ``ai.route`` step (strategy
``bandit``) made; ``GET /v1/workflows/{name}/steps/{step}/decisions`` shows the estimates of
that step's bandit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.bodies import JsonBodyRoute
from api.deps import PrincipalDep, RuntimeDep, guard
from api.problems import responses
from engine.auth import Role
from engine.model import STEP_ID_PATTERN, WORKFLOW_NAME_PATTERN

router = APIRouter(tags=["decisions"], route_class=JsonBodyRoute)


class Reward(BaseModel):
    """How a bandit decision turned out: 1 success, 0 failure, or anything between."""

    step: str = Field(min_length=1, description="Key of the ai.route step whose decision is rewarded")
    reward: float = Field(ge=0, le=1)


class RewardResult(BaseModel):
    counted: bool = Field(description="False when this step's decision had been rewarded before")


class ArmEstimate(BaseModel):
    successes: float
    failures: float
    alpha: float
    beta: float
    mean: float = Field(description="Estimated success rate (posterior mean)")


class Estimates(BaseModel):
    bandit: str
    half_life: float | None = Field(
        default=None, description="Seconds; counts are decayed to now (an outcome this old weighs half)"
    )
    arms: dict[str, ArmEstimate]


@router.post(
    "/v1/executions/{execution_id}/rewards",
    response_model=RewardResult,
    summary="Reward a bandit decision",
    responses=responses(404),
    **guard(Role.OPERATOR),
)
def reward(
    rt: RuntimeDep, principal: PrincipalDep, execution_id: Annotated[str, Path(min_length=1)], body: Reward
) -> RewardResult:
    return RewardResult(counted=rt.service.rewards.count(principal.tenant, execution_id, body.step, body.reward))


@router.get(
    "/v1/workflows/{name}/steps/{step_id}/decisions",
    response_model=Estimates,
    summary="What a step's bandit (ai.route or switch, strategy bandit) has learned",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def estimates(
    rt: RuntimeDep,
    principal: PrincipalDep,
    name: Annotated[str, Path(pattern=WORKFLOW_NAME_PATTERN)],
    step_id: Annotated[str, Path(pattern=STEP_ID_PATTERN)],
) -> Any:
    return rt.service.rewards.estimates(principal.tenant, name, step_id)
