"""``/v1/events``: publish an external event into the tenant's event log (then routed)."""

from __future__ import annotations

from fastapi import APIRouter

from api import actions
from api.bodies import StrictRoute
from api.deps import PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.events import EventAccepted, PublishEvent
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
