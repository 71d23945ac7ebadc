"""``/v1/triggers``: trigger bookkeeping (firing belongs to the trigger runtime)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api import actions
from api.bodies import StrictRoute
from api.deps import PageDep, PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.common import Page
from api.schemas.triggers import Trigger, TriggerCreate, TriggerUpdate
from engine.auth import Role

router = APIRouter(prefix="/v1/triggers", tags=["triggers"], route_class=StrictRoute)

TriggerId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


@router.post(
    "",
    response_model=Trigger,
    status_code=201,
    summary="Create a trigger",
    responses=responses(404),
    **guard(Role.EDITOR),
)
def create(rt: RuntimeDep, principal: PrincipalDep, body: TriggerCreate) -> Trigger:
    return Trigger.from_record(actions.create_trigger(rt, principal, body))


@router.get("", response_model=Page[Trigger], summary="List triggers", responses=responses(), **guard(Role.VIEWER))
def list_triggers(rt: RuntimeDep, principal: PrincipalDep, page: PageDep) -> Page[Trigger]:
    found = actions.triggers(rt).list_page(principal.tenant, cursor=page.cursor, limit=page.limit)
    return Page(items=[Trigger.from_record(r) for r in found.items], next_cursor=found.next_cursor)


@router.get(
    "/{trigger_id}", response_model=Trigger, summary="Get a trigger", responses=responses(404), **guard(Role.VIEWER)
)
def get_trigger(rt: RuntimeDep, principal: PrincipalDep, trigger_id: TriggerId) -> Trigger:
    return Trigger.from_record(actions.triggers(rt).get(principal.tenant, trigger_id))


@router.patch(
    "/{trigger_id}", response_model=Trigger, summary="Update a trigger", responses=responses(404), **guard(Role.EDITOR)
)
def update(rt: RuntimeDep, principal: PrincipalDep, trigger_id: TriggerId, body: TriggerUpdate) -> Trigger:
    return Trigger.from_record(actions.triggers(rt).update(principal.tenant, trigger_id, body.changes()))


@router.post(
    "/{trigger_id}/enable",
    response_model=Trigger,
    summary="Enable a trigger",
    responses=responses(404),
    **guard(Role.EDITOR),
)
def enable(rt: RuntimeDep, principal: PrincipalDep, trigger_id: TriggerId) -> Trigger:
    return Trigger.from_record(actions.triggers(rt).set_enabled(principal.tenant, trigger_id, True))


@router.post(
    "/{trigger_id}/disable",
    response_model=Trigger,
    summary="Disable a trigger",
    responses=responses(404),
    **guard(Role.EDITOR),
)
def disable(rt: RuntimeDep, principal: PrincipalDep, trigger_id: TriggerId) -> Trigger:
    return Trigger.from_record(actions.triggers(rt).set_enabled(principal.tenant, trigger_id, False))


@router.delete(
    "/{trigger_id}", status_code=204, summary="Delete a trigger", responses=responses(404), **guard(Role.EDITOR)
)
def delete(rt: RuntimeDep, principal: PrincipalDep, trigger_id: TriggerId) -> Response:
    actions.triggers(rt).delete(principal.tenant, trigger_id)
    return Response(status_code=204)
