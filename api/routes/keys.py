"""``/v1/keys``: API keys of the caller's tenant (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.bodies import StrictRoute
from api.deps import PrincipalDep, RuntimeDep, guard
from api.problems import responses
from api.schemas.keys import ApiKey, CreatedApiKey, KeyCreate
from engine.auth import Role

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=StrictRoute)

KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")]


@router.post(
    "",
    response_model=CreatedApiKey,
    status_code=201,
    summary="Create an API key",
    responses=responses(),
    **guard(Role.ADMIN),
)
def create(rt: RuntimeDep, principal: PrincipalDep, body: KeyCreate) -> CreatedApiKey:
    created = rt.keys.create(principal.tenant, body.role, body.name, ttl_seconds=body.ttl_seconds)
    return CreatedApiKey(**ApiKey.from_record(created.record).model_dump(), token=created.token)


@router.get("", response_model=list[ApiKey], summary="List API keys", responses=responses(), **guard(Role.ADMIN))
def list_keys(rt: RuntimeDep, principal: PrincipalDep) -> list[ApiKey]:
    return [ApiKey.from_record(r) for r in rt.keys.for_tenant(principal.tenant)]


@router.delete(
    "/{key_id}", response_model=ApiKey, summary="Revoke an API key", responses=responses(404), **guard(Role.ADMIN)
)
def revoke(rt: RuntimeDep, principal: PrincipalDep, key_id: KeyId) -> ApiKey:
    record = rt.keys.revoke(principal.tenant, key_id)
    rt.auth.forget(key_id)
    return ApiKey.from_record(record)
