"""``GET /v1/whoami`` and GraphQL ``whoami``: the caller's tenant and role, for every role."""

from __future__ import annotations

from typing import Any

import pytest

from engine.auth import Role
from tests.api.support import TENANT_A, TENANT_B


@pytest.mark.parametrize("role", list(Role))
def test_whoami_names_the_callers_tenant_and_role(api: Any, role: Role) -> None:
    for tenant in (TENANT_A, TENANT_B):
        body = api.call("GET", "/v1/whoami", role=role, tenant=tenant).json()
        assert (body["tenant"], body["role"], body["kind"]) == (tenant, role.value, "key")
        data = api.gql("{ whoami { tenant role kind } }", role=role, tenant=tenant)["data"]["whoami"]
        assert (data["tenant"], data["role"]) == (tenant, role.name)


def test_whoami_needs_a_credential(api: Any) -> None:
    assert api.client.get("/v1/whoami").status_code == 401
