"""``/v1/events``: publish an external event into the tenant's event log (then routed), and
list the recent dead letters of the Pub/Sub bridge.

The body of a publish is Conveyor's own JSON (:class:`~api.schemas.events.PublishEvent`) or one CloudEvent
in structured mode (``Content-Type: application/cloudevents+json``, mapped by
:mod:`engine.cloudevents`); batched mode is refused with 415.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.types import Message, Receive

from api import actions
from api.bodies import BodyRefused, StrictRoute, decode_json
from api.deps import PrincipalDep, RuntimeDep, guard, runtime
from api.problems import responses
from api.schemas.events import DeadLetter, DeadLetters, EventAccepted, PublishEvent
from engine import cloudevents
from engine.auth import Role

#: The route's second body form, listed in its OpenAPI document.
CLOUDEVENT_BODY = {
    "requestBody": {
        "content": {
            cloudevents.STRUCTURED_MEDIA_TYPE: {
                "schema": {
                    "type": "object",
                    "required": ["specversion", "id", "source", "type"],
                    "properties": {
                        "specversion": {"type": "string", "enum": ["1.0"]},
                        "id": {"type": "string"},
                        "source": {"type": "string"},
                        "type": {"type": "string"},
                        "datacontenttype": {"type": "string"},
                        "data": {"type": "object"},
                        cloudevents.CORRELATION_ATTRIBUTE: {"type": "string"},
                    },
                }
            }
        }
    }
}


class CloudEventRoute(StrictRoute):
    """A :class:`StrictRoute` that also takes one CloudEvent in structured mode.

    The envelope is mapped to a :class:`PublishEvent` body (its checks then apply as to any
    body); an envelope Conveyor cannot take is a 422 listing every problem.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            media_type = request.headers.get("content-type")
            if cloudevents.is_batch(media_type):
                detail = "CloudEvents batched mode is not accepted: send one event per request"
                raise BodyRefused(415, "unsupported-media-type", detail)
            if not cloudevents.is_structured(media_type):
                return await handler(request)
            envelope = decode_json(await request.body(), runtime(request).settings.max_json_depth)
            fields = cloudevents.from_structured(envelope)
            body = {
                "type": fields["type"],
                "data": fields["data"],
                "id": fields["event_id"],
                "source": fields["source"],
                "correlation_key": fields["correlation_key"],
            }
            encoded = json.dumps(body).encode()
            scope = dict(request.scope)
            replaced = (b"content-type", b"content-length")
            scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k not in replaced]
            scope["headers"] += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(encoded))]
            return await handler(Request(scope, _replay(encoded, request.receive)))

        return route_handler


def _replay(body: bytes, receive: Receive) -> Receive:
    """An ASGI ``receive`` that hands over ``body`` (the mapped event) first, then the real one."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


router = APIRouter(prefix="/v1/events", tags=["events"], route_class=CloudEventRoute)


@router.post(
    "",
    response_model=EventAccepted,
    status_code=202,
    summary="Publish an external event",
    description="The event is stored durably in the tenant's event log, then routed: matching "
    "event triggers start their workflows (once per trigger and event id) and `wait_for_event` "
    "steps waiting for its type and `correlation_key` resume. Publishing the same `id` again is "
    "acknowledged with `duplicate: true` and neither stored nor routed twice. The body may also be "
    "one CloudEvent in structured mode (`Content-Type: application/cloudevents+json`: `id`, "
    "`type`, `source`, `data`, extension `correlationkey`); batched mode is refused (415).",
    responses=responses(415),
    **guard(Role.OPERATOR, CLOUDEVENT_BODY),
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
