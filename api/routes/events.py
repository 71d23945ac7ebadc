"""``/v1/events``: publish an external event (routing to triggers happens elsewhere)."""

from __future__ import annotations

from fastapi import APIRouter

from api import actions
from api.deps import PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.events import EventAccepted, PublishEvent
from engine.auth import Role

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post(
    "",
    response_model=EventAccepted,
    status_code=202,
    summary="Publish an external event",
    description="The event is stored in the tenant's inbox and acknowledged; event triggers and "
    "waiting steps receive it asynchronously. Publishing the same `id` again is acknowledged "
    "with `duplicate: true` and not stored twice.",
    responses=responses(),
    **guard(Role.OPERATOR),
)
def publish(rt: RuntimeDep, principal: PrincipalDep, body: PublishEvent) -> EventAccepted:
    accepted = actions.publish_event(
        rt, principal, type=body.type, data=body.data, event_id=body.id, source=body.source
    )
    return EventAccepted.from_result(accepted)
