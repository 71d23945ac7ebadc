"""``/v1/events``: publish an external event into the tenant's event log (then routed), and
list the recent dead letters of the Pub/Sub bridge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import actions
from api.bodies import StrictRoute
from api.deps import PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.events import DeadLetter, DeadLetters, EventAccepted, PublishEvent
from engine.auth import Role

router = APIRouter(prefix="/v1/events", tags=["events"], route_class=StrictRoute)


@router.post(
    "",
    response_model=EventAccepted,
    status_code=202,
    summary="Publish an external event",
    description="The event is stored durably in the tenant's event log, then routed: matching "
    "event triggers start their workflows (once per trigger and event id) and `wait_for_event` "
    "steps waiting for its type and `correlation_key` resume. Publishing the same `id` again is "
    "acknowledged with `duplicate: true` and neither stored nor routed twice.",
    responses=responses(),
    **guard(Role.OPERATOR),
)
def publish(rt: RuntimeDep, principal: PrincipalDep, body: PublishEvent) -> EventAccepted:
    accepted = actions.publish_event(
        rt,
        principal,
        type=body.type,
        data=body.data,
        event_id=body.id,
        source=body.source,
        correlation_key=body.correlation_key,
    )
    return EventAccepted.from_result(accepted)


@router.get(
    "/dead-letters",
    response_model=DeadLetters,
    summary="Recent dead letters of the Pub/Sub bridge",
    description="Messages of this tenant's bridge subscriptions that could not become events "
    "(malformed, unroutable, too large, or failing transiently too often), most recent first, with "
    "the reason. The bridge keeps the last `CONVEYOR_BRIDGE_DEAD_LETTERS_KEPT` per tenant (in Redis); "
    "the dead-letter topic keeps every one.",
    responses=responses(),
    **guard(Role.VIEWER),
)
def dead_letters(
    rt: RuntimeDep, principal: PrincipalDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> DeadLetters:
    return DeadLetters(items=[DeadLetter.from_record(r) for r in rt.dead_letters.recent(principal.tenant, limit)])
