"""``/v1/prompts``: the tenant's named, versioned prompt templates (AI steps use them as
``prompt: {name, version}``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.bodies import StrictRoute
from api.deps import PageDep, PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.common import Page
from api.schemas.prompts import PromptBody, PromptVersion
from engine.auth import Role
from engine.prompts import PROMPT_NAME_PATTERN

router = APIRouter(tags=["prompts"], route_class=StrictRoute)
PREFIX = "/v1/prompts"

PromptName = Annotated[str, Path(pattern=PROMPT_NAME_PATTERN, examples=["support-reply"])]


@router.get(
    PREFIX,
    response_model=Page[PromptVersion],
    summary="List prompts (newest version of each)",
    responses=responses(),
    **guard(Role.VIEWER),
)
def list_prompts(rt: RuntimeDep, principal: PrincipalDep, page: PageDep) -> Page[PromptVersion]:
    found = rt.prompts.list(principal.tenant, cursor=page.cursor, limit=page.limit)
    return Page(items=[PromptVersion.from_record(r) for r in found.items], next_cursor=found.next_cursor)


@router.put(
    PREFIX + "/{name}",
    response_model=PromptVersion,
    status_code=201,
    summary="Create a prompt or add a version",
    description="Saves the texts as the next version. Unchanged texts return the newest version with "
    "status 200 instead of 201. Every `${...}` expression is checked (422 `invalid`).",
    responses={200: {"model": PromptVersion, "description": "Unchanged: the newest version"}, **responses()},
    **guard(Role.EDITOR),
)
def apply(
    rt: RuntimeDep, principal: PrincipalDep, name: PromptName, body: PromptBody, response: Response
) -> PromptVersion:
    record, created = rt.prompts.apply(principal.tenant, name, body.template, body.system, body.description)
    if not created:
        response.status_code = 200
    return PromptVersion.from_record(record)


@router.get(
    PREFIX + "/{name}",
    response_model=PromptVersion,
    summary="Get the newest version of a prompt",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def get_prompt(rt: RuntimeDep, principal: PrincipalDep, name: PromptName) -> PromptVersion:
    return PromptVersion.from_record(rt.prompts.get(principal.tenant, name))


@router.get(
    PREFIX + "/{name}/versions",
    response_model=Page[PromptVersion],
    summary="List a prompt's versions, newest first",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def list_versions(rt: RuntimeDep, principal: PrincipalDep, name: PromptName, page: PageDep) -> Page[PromptVersion]:
    found = rt.prompts.versions(principal.tenant, name, cursor=page.cursor, limit=page.limit)
    return Page(items=[PromptVersion.from_record(r) for r in found.items], next_cursor=found.next_cursor)


@router.get(
    PREFIX + "/{name}/versions/{version}",
    response_model=PromptVersion,
    summary="Get one version of a prompt",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def get_version(
    rt: RuntimeDep, principal: PrincipalDep, name: PromptName, version: Annotated[int, Path(ge=1, le=2**31)]
) -> PromptVersion:
    return PromptVersion.from_record(rt.prompts.get(principal.tenant, name, version))
