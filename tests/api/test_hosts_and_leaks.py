"""Issue 11 items 5 and 7: foreign Host names, Origin checks that do not trust Host, and what
errors, cursors and keys must not give away."""

from __future__ import annotations

import time

import pytest
from starlette.websockets import WebSocketDisconnect

from engine.auth import Role
from engine.keys import ApiKeys
from engine.runner import _error
from tests.api.conftest import Api, ApiFactory
from tests.api.support import HELLO, TENANT_A, WAITER, bearer

pytestmark = pytest.mark.timeout(60)


def _waiting(api: Api) -> str:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    return str(api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"])


@pytest.mark.parametrize("path", ["/v1/executions/{id}/events", "/graphql"])
def test_a_websocket_from_a_foreign_page_is_refused_even_when_host_matches_origin(api: Api, path: str) -> None:
    url = path.replace("{id}", _waiting(api))
    rebound = {"host": "evil.example", "origin": "http://evil.example", **api.headers(Role.VIEWER)}
    with (
        pytest.raises(WebSocketDisconnect),
        api.client.websocket_connect(url, headers=rebound, subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.receive_json()
    # An allow-listed origin, and a same-origin page on a loopback host, still connect.
    for headers in (
        {"origin": "http://allowed.example"},
        {"host": "localhost:8080", "origin": "http://localhost:8080"},
    ):
        with api.client.websocket_connect(
            url, headers={**headers, **api.headers(Role.VIEWER)}, subprotocols=["graphql-transport-ws"]
        ) as ws:
            ws.close()


def test_the_host_allow_list_refuses_other_names(make_api: ApiFactory) -> None:
    api = make_api(allowed_hosts=["api.example.com", "*.internal.example"])
    for host, status in (("api.example.com", 200), ("a.b.internal.example:8443", 200), ("evil.example", 400)):
        response = api.call("GET", "/v1/workflows", headers={"host": host})
        assert response.status_code == status, (host, response.text)
    assert api.client.get("/healthz", headers={"host": "10.0.0.7:8080"}).status_code == 200  # probes
    # A same-origin page on an explicitly listed host may open a stream.
    api.client.headers["host"] = "api.example.com"
    url = f"/v1/executions/{_waiting(api)}/events"
    same = {"host": "api.example.com", "origin": "https://api.example.com", **api.headers(Role.VIEWER)}
    with api.client.websocket_connect(url, headers=same) as ws:
        assert ws.receive_json()["type"] == "snapshot"


def test_a_cursor_from_the_future_is_refused(api: Api) -> None:
    url = f"/v1/executions/{_waiting(api)}/events"
    with api.client.websocket_connect(f"{url}?after=99999999999999-0", headers=api.headers(Role.VIEWER)) as ws:
        message = ws.receive_json()
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    assert message["type"] == "error" and message["problem"]["status"] == 422
    assert "ahead" in message["problem"]["detail"]


def test_an_expiring_key_stops_working_at_its_expiry(api: Api) -> None:
    clock = api.service.clock
    created = ApiKeys(api.service.store, clock).create(TENANT_A, Role.VIEWER, "short", ttl_seconds=1.5)
    assert api.client.get("/v1/workflows", headers=bearer(created.token)).status_code == 200  # now cached
    expires_at = created.record.expires_at
    assert expires_at is not None
    time.sleep(max(0.0, expires_at - clock.now()) + 0.05)
    assert api.client.get("/v1/workflows", headers=bearer(created.token)).status_code == 401


def test_worker_tracebacks_name_no_host_directories() -> None:
    try:
        HELLO["missing"]  # type: ignore[misc]
    except KeyError as exc:
        error = _error(exc)
    assert "tests/api/test_hosts_and_leaks.py" in error["traceback"]
    assert "/work/" not in error["traceback"] and "site-packages" not in error["traceback"]
