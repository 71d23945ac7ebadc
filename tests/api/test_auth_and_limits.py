"""Authentication, API keys, request size limit, rate limits and quotas."""

from __future__ import annotations

import uuid

import pytest

from api.ratelimit import RateLimiter
from engine.auth import Principal, Role
from engine.errors import RateLimited
from engine.keys import ApiKeys
from tests.api.conftest import Api, ApiFactory
from tests.api.support import HELLO, TENANT_A, bearer


def test_missing_or_invalid_credentials_are_401_problems(api: Api) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, bearer("cvk_0123456789abcdef_wrong"), bearer("garbage")):
        response = api.client.get("/v1/workflows", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["code"] == "unauthenticated"


def test_a_key_with_a_valid_id_but_wrong_secret_is_refused(api: Api) -> None:
    token = api.keys[(TENANT_A, Role.ADMIN)]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert api.client.get("/v1/workflows", headers=bearer(tampered)).status_code == 401


def test_keys_are_created_listed_without_secret_and_revoked(api: Api) -> None:
    created = api.call("POST", "/v1/keys", json={"name": "ci", "role": "operator"})
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("cvk_")
    assert api.client.get("/v1/workflows", headers=bearer(token)).status_code == 200
    listed = api.call("GET", "/v1/keys").json()
    assert all("token" not in k and "key_hash" not in k for k in listed)
    assert created.json()["id"] in {k["id"] for k in listed}
    revoked = api.call("DELETE", f"/v1/keys/{created.json()['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert api.client.get("/v1/workflows", headers=bearer(token)).status_code == 401
    assert api.call("DELETE", "/v1/keys/0000000000000000").status_code == 404


def test_the_store_keeps_only_a_hash_and_expired_keys_are_refused(api: Api) -> None:
    keys = ApiKeys(api.service.store, api.service.clock)
    created = keys.create(TENANT_A, Role.VIEWER, "short", ttl_seconds=1)
    stored = api.service.store.find_api_key(created.record.key_hash)
    assert stored is not None and created.token not in repr(stored)

    class Later:
        def now(self) -> float:
            return api.service.clock.now() + 10

    with pytest.raises(Exception, match="invalid API key"):
        ApiKeys(api.service.store, Later()).authenticate(created.token)


def test_auth_can_be_switched_off_for_local_development(make_api: ApiFactory) -> None:
    open_api = make_api(auth_enabled=False)
    assert open_api.client.get("/v1/workflows", headers={"Host": "localhost:8080"}).status_code == 200
    # Without auth every caller is an admin: a DNS-rebinding page (a foreign Host) is refused.
    foreign = open_api.client.post("/v1/keys", json={"name": "x", "role": "admin"}, headers={"Host": "evil.example"})
    assert foreign.status_code == 400 and foreign.json()["code"] == "host-not-allowed"


def test_bodies_over_the_limit_are_413_whether_declared_or_streamed(make_api: ApiFactory) -> None:
    api = make_api(max_request_bytes=2048)
    big = {**HELLO, "description": "x" * 4096}
    declared = api.call("PUT", "/v1/workflows/hello", json=big)
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload-too-large"

    def chunks():
        yield b'{"name": "hello", "description": "'
        for _ in range(10):
            yield b"y" * 512
        yield b'"}'

    streamed = api.client.put(
        "/v1/workflows/hello", content=chunks(), headers={**api.headers(), "content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert api.call("GET", "/v1/workflows/hello").status_code == 404


def test_malformed_json_is_a_400_problem(api: Api) -> None:
    response = api.client.put(
        "/v1/workflows/hello", content=b"{nope", headers={**api.headers(), "content-type": "application/json"}
    )
    assert response.status_code == 400, response.text  # as docs/api.md says
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "malformed-json"


def test_unknown_routes_are_404_problems(api: Api) -> None:
    response = api.call("GET", "/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_per_key_rate_limit_answers_429_with_retry_after(make_api: ApiFactory) -> None:
    api = make_api(rate_limit="3/minute")
    statuses = [api.call("GET", "/v1/workflows", role=Role.VIEWER).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = api.call("GET", "/v1/workflows", role=Role.VIEWER)
    assert limited.json()["code"] == "rate-limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # another key of the same tenant has its own bucket
    assert api.call("GET", "/v1/workflows", role=Role.EDITOR).status_code == 200


def test_per_tenant_rate_limit_covers_all_keys_of_the_tenant(make_api: ApiFactory) -> None:
    api = make_api(tenant_rate_limit="4/minute")
    statuses = [api.call("GET", "/v1/workflows", role=role).status_code for role in Role]
    assert statuses == [200, 200, 200, 200]
    assert api.call("GET", "/v1/workflows", role=Role.VIEWER).status_code == 429
    assert api.call("GET", "/v1/workflows", tenant="globex").status_code == 200


async def test_rate_limits_are_shared_through_redis(redis_server_url: str) -> None:
    prefix = f"conveyor-test-{uuid.uuid4().hex}"
    replicas = [RateLimiter("2/minute", "100/minute", redis_url=redis_server_url, prefix=prefix) for _ in range(2)]
    principal = Principal(TENANT_A, Role.VIEWER, "k", "key", key_id="k1")
    await replicas[0].hit(principal)
    await replicas[1].hit(principal)
    with pytest.raises(RateLimited) as refused:
        await replicas[0].hit(principal)
    assert refused.value.retry_after >= 1
    assert await replicas[1].healthy()


def test_concurrent_execution_quota_is_a_429(make_api: ApiFactory) -> None:
    api = make_api(max_concurrent_executions=1)
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    body = {"workflow": "hello", "input": {"who": "a"}}
    assert api.call("POST", "/v1/executions", json=body).status_code == 201
    refused = api.call("POST", "/v1/executions", json=body)
    assert refused.status_code == 429
    assert refused.json()["code"] == "quota-exceeded"
    assert "retry-after" in refused.headers
    api.driver.run_all()
    assert api.call("POST", "/v1/executions", json=body).status_code == 201


def test_health_readiness_and_metrics(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["store"] == "ok"
    api.call("GET", "/v1/workflows")
    metrics = api.client.get("/metrics").text
    assert 'conveyor_api_requests_total{method="GET",route="/v1/workflows",status="200"}' in metrics
    assert TENANT_A not in metrics


def test_readiness_fails_when_the_broker_is_down(make_api: ApiFactory) -> None:
    from engine.errors import StoreUnavailable

    api = make_api()

    def down() -> None:
        raise StoreUnavailable("broker down")

    api.service.dispatcher.ping = down  # type: ignore[attr-defined]
    ready = api.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"].startswith("unreachable")
