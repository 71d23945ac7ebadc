"""``/v1/workflows``: apply versions, list, get, validate (``POST /v1/workflows:validate``), archive."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response

from api import actions
from api.bodies import StrictRoute
from api.deps import PageDep, PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.common import Page
from api.schemas.workflows import DEFINITION_EXAMPLE, ValidationReport, WorkflowSummary, WorkflowVersion
from engine.auth import Role
from engine.model import WORKFLOW_NAME_PATTERN

router = APIRouter(tags=["workflows"], route_class=StrictRoute)
PREFIX = "/v1/workflows"

WorkflowName = Annotated[str, Path(pattern=WORKFLOW_NAME_PATTERN, examples=["hello"])]
#: Definitions may also be sent as YAML, the format they are written in (api.bodies).
YAML_BODY = {"requestBody": {"content": {"application/yaml": {"schema": {"type": "object"}}}}}
Definition = Annotated[dict[str, Any], Body(examples=[DEFINITION_EXAMPLE], description="A workflow definition")]


@router.post(
    PREFIX + ":validate",
    response_model=ValidationReport,
    summary="Validate a definition without saving it",
    responses=responses(),
    **guard(Role.VIEWER, YAML_BODY),
)
def validate(rt: RuntimeDep, definition: Definition) -> ValidationReport:
    return actions.validate_workflow(rt, definition)


@router.get(
    PREFIX,
    response_model=Page[WorkflowSummary],
    summary="List workflows (latest version of each)",
    responses=responses(),
    **guard(Role.VIEWER),
)
def list_workflows(rt: RuntimeDep, principal: PrincipalDep, page: PageDep) -> Page[WorkflowSummary]:
    found = rt.service.list_workflows(principal.tenant, cursor=page.cursor, limit=page.limit)
    return Page(items=[WorkflowSummary.from_record(r) for r in found.items], next_cursor=found.next_cursor)


@router.put(
    PREFIX + "/{name}",
    response_model=WorkflowVersion,
    status_code=201,
    summary="Create a workflow or add a version",
    description="Saves the definition as the next version. An unchanged definition returns the "
    "latest version with status 200 instead of 201. The definition's `name` may be left out; when "
    "given it must equal the path's `{name}` (422 `invalid` otherwise). JSON or YAML "
    "(`Content-Type: application/yaml`, without anchors or aliases).",
    responses={200: {"model": WorkflowVersion, "description": "Unchanged: the latest version"}, **responses()},
    **guard(Role.EDITOR, YAML_BODY),
)
def apply(
    rt: RuntimeDep, principal: PrincipalDep, name: WorkflowName, definition: Definition, response: Response
) -> WorkflowVersion:
    result = actions.apply_workflow(rt, principal, name, definition)
    if not result.created:
        response.status_code = 200
    return WorkflowVersion.from_record(result.version)


@router.get(
    PREFIX + "/{name}",
    response_model=WorkflowVersion,
    summary="Get the latest version",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def get_workflow(rt: RuntimeDep, principal: PrincipalDep, name: WorkflowName) -> WorkflowVersion:
    return WorkflowVersion.from_record(rt.service.get_workflow(principal.tenant, name))


@router.get(
    PREFIX + "/{name}/versions",
    response_model=Page[WorkflowSummary],
    summary="List versions, newest first",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def list_versions(rt: RuntimeDep, principal: PrincipalDep, name: WorkflowName, page: PageDep) -> Page[WorkflowSummary]:
    found = rt.service.list_workflow_versions(principal.tenant, name, cursor=page.cursor, limit=page.limit)
    if not found.items and page.cursor is None:
        rt.service.get_workflow(principal.tenant, name)  # 404 for an unknown workflow, not an empty list
    return Page(items=[WorkflowSummary.from_record(r) for r in found.items], next_cursor=found.next_cursor)


@router.get(
    PREFIX + "/{name}/versions/{version}",
    response_model=WorkflowVersion,
    summary="Get one version",
    responses=responses(404),
    **guard(Role.VIEWER),
)
def get_version(
    rt: RuntimeDep, principal: PrincipalDep, name: WorkflowName, version: Annotated[int, Path(ge=1, le=2**31)]
) -> WorkflowVersion:
    return WorkflowVersion.from_record(rt.service.get_workflow(principal.tenant, name, version))


@router.post(
    PREFIX + "/{name}/archive",
    status_code=204,
    summary="Archive a workflow (no new starts of its latest)",
    responses=responses(404),
    **guard(Role.EDITOR),
)
def archive(rt: RuntimeDep, principal: PrincipalDep, name: WorkflowName) -> Response:
    rt.service.archive_workflow(principal.tenant, name, True)
    return Response(status_code=204)


@router.post(
    PREFIX + "/{name}/restore",
    status_code=204,
    summary="Restore an archived workflow",
    responses=responses(404),
    **guard(Role.EDITOR),
)
def restore(rt: RuntimeDep, principal: PrincipalDep, name: WorkflowName) -> Response:
    rt.service.archive_workflow(principal.tenant, name, False)
    return Response(status_code=204)
