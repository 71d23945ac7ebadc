"""Generated from the route table: role guards on every route, and tenant isolation.

Tenant B's credentials (admin, the strongest role) are sent against every route naming a
tenant-A resource: each answer must be 403/404 and carry none of tenant A's data, and
tenant A's resources must be unchanged afterwards.
"""

from __future__ import annotations

import json

import pytest

from engine.auth import Role
from tests.api.conftest import Api, ApiFactory
from tests.api.routetable import RouteCase, v1_routes
from tests.api.support import HELLO, TENANT_A, TENANT_B, WAITER


def _app_routes() -> list[RouteCase]:
    from api import create_app

    return v1_routes(create_app())


ROUTES = _app_routes()


@pytest.fixture
def seeded(make_api: ApiFactory) -> tuple[Api, dict[str, str]]:
    """Tenant A with one of everything; returns the path parameters naming A's resources."""
    api = make_api()
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call(
        "POST", "/v1/executions", json={"workflow": "waiter", "input": {"secret": "A-only"}}
    ).json()["id"]
    api.driver.run_all()
    trigger_id = api.call(
        "POST", "/v1/triggers", json={"workflow": "hello", "kind": "event", "spec": {"type": "a.secret"}}
    ).json()["id"]
    key_id = api.call("POST", "/v1/keys", json={"name": "a-key", "role": "viewer"}).json()["id"]
    api.call("PUT", "/v1/prompts/waiter", json={"template": "A-only prompt"})
    params = {
        "name": "waiter",
        "version": "1",
        "execution_id": execution_id,
        "trigger_id": trigger_id,
        "key_id": key_id,
        "step_id": "hold",
        "step_key": "hold",
    }
    return api, params


@pytest.mark.parametrize("case", ROUTES, ids=lambda c: c.id)
def test_every_role_below_the_guard_is_forbidden(make_api: ApiFactory, case: RouteCase) -> None:
    api = make_api()
    url = case.url(
        {
            "name": "hello",
            "version": "1",
            "execution_id": "e",
            "trigger_id": "t",
            "key_id": "0123456789abcdef",
            "step_id": "s",
            "step_key": "hold",
        }
    )
    for role in Role:
        response = api.call(case.method, url, role=role, json=case.json())
        if role.allows(case.role):
            assert response.status_code not in (401, 403), (role, response.json())
        else:
            assert response.status_code == 403, (role, response.status_code)
            assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize("case", ROUTES, ids=lambda c: c.id)
def test_tenant_b_cannot_see_or_touch_tenant_a(seeded: tuple[Api, dict[str, str]], case: RouteCase) -> None:
    api, params = seeded
    before = _tenant_a_state(api)
    url = case.url(params)
    response = api.call(case.method, url, tenant=TENANT_B, json=case.json())
    text = response.text
    # An id the caller put in the URL may be echoed back ("execution 'x' not found"); nothing else may appear.
    secrets = [params["execution_id"], params["trigger_id"], params["key_id"], "A-only", "a.secret", "a-key"]
    for secret in (s for s in secrets if s not in url):
        assert secret not in text, f"{case.id} leaked {secret!r}: {text[:300]}"
    names_a_resource = "{" in case.path
    if names_a_resource and case.method != "PUT":
        assert response.status_code in (403, 404), (case.id, response.status_code, text[:300])
    assert _tenant_a_state(api) == before, f"{case.id} changed tenant A's data"


def _tenant_a_state(api: Api) -> str:
    """Everything tenant A can see, as one comparable string."""
    service = api.service
    parts = [
        [(w.name, w.version, w.archived) for w in service.list_workflows(TENANT_A, limit=200).items],
        [(e.id, e.status, e.run) for e in service.list_executions(TENANT_A, limit=200).items],
        [(t.id, t.enabled, t.spec) for t in service.store.list_triggers(TENANT_A, limit=200).items],
        [(k.id, k.revoked) for k in service.store.list_api_keys(TENANT_A)],
        [(p.name, p.version) for p in api.app.state.runtime.prompts.list(TENANT_A, limit=200).items],
    ]
    return json.dumps(parts, default=str)
