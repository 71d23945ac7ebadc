"""The executionEvents subscription over a real WebSocket speaking graphql-transport-ws."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from api.auth import KEY_CACHE_SECONDS
from engine.auth import Role
from engine.keys import ApiKeys, parse_token
from tests.api.conftest import Api, ApiFactory
from tests.api.support import HELLO, TENANT_A, TENANT_B, WAITER
from tests.jwks import AUDIENCE, ISSUER, Jwks

PROTOCOL = "graphql-transport-ws"
SUBSCRIPTION = """subscription ($id: ID!, $after: String) {
  executionEvents(executionId: $id, after: $after) {
    __typename
    ... on ExecutionSnapshot { cursor reset execution { id status } steps { key status } }
    ... on ExecutionChange { cursor event { id type stepKey } }
    ... on StreamHeartbeat { cursor }
    ... on Problem { code }
  }
}"""

pytestmark = pytest.mark.timeout(60)


def _connect(ws: WebSocketTestSession, token: str) -> None:
    ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    assert ws.receive_json() == {"type": "connection_ack"}


def _subscribe(ws: WebSocketTestSession, execution_id: str, after: str | None = None) -> None:
    ws.send_json(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": SUBSCRIPTION, "variables": {"id": execution_id, "after": after}},
        }
    )


def _next(ws: WebSocketTestSession) -> dict[str, Any]:
    """The next subscription payload that is not a heartbeat."""
    while True:
        message = ws.receive_json()
        assert message["type"] == "next", message
        data = message["payload"]["data"]["executionEvents"]
        if data["__typename"] != "StreamHeartbeat":
            return data


def _start(api: Api) -> str:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    return api.call("POST", "/v1/executions", json={"workflow": "hello", "input": {"who": "ws"}}).json()["id"]


def _events_until_done(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    events = []
    while True:
        change = _next(ws)
        assert change["__typename"] == "ExecutionChange", change
        events.append(change)
        if change["event"]["type"] == "execution.succeeded":
            return events


def _history(api: Api, execution_id: str) -> list[str]:
    page = api.call("GET", f"/v1/executions/{execution_id}/history", params={"limit": 500}).json()
    return [e["id"] for e in page["items"]]


def test_snapshot_then_events_and_resume_without_gaps_or_duplicates(api: Api) -> None:
    execution_id = _start(api)
    before_snapshot = _history(api, execution_id)
    token = api.keys[(TENANT_A, Role.VIEWER)]
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        _connect(ws, token)
        _subscribe(ws, execution_id)
        snapshot = _next(ws)
        assert snapshot["__typename"] == "ExecutionSnapshot"
        assert snapshot["execution"]["status"] == "RUNNING"
        assert snapshot["steps"] == [{"key": "greet", "status": "QUEUED"}]
        api.driver.run_once()  # runs "greet": claimed, succeeded, "shout" queued
        first = [_next(ws) for _ in range(3)]
        ws.send_json({"id": "1", "type": "complete"})
    assert [c["event"]["type"] for c in first] == ["step.running", "step.succeeded", "step.queued"]
    api.driver.run_all()  # the rest happens while nobody listens
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        _connect(ws, token)
        _subscribe(ws, execution_id, after=first[-1]["cursor"])
        rest = _events_until_done(ws)
    seen = [c["event"]["id"] for c in first + rest]
    assert len(seen) == len(set(seen)), "duplicates"
    history = _history(api, execution_id)
    assert seen == history[len(before_snapshot) :], "the stream must carry every event after the snapshot, in order"


def test_subscribing_before_connection_init_is_refused(api: Api) -> None:
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        _subscribe(ws, "anything")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


@pytest.mark.parametrize("payload", [{}, {"authorization": "Bearer cvk_0123456789abcdef_nope"}, {"token": "x"}])
def test_connection_init_without_valid_credentials_is_refused(api: Api, payload: dict[str, str]) -> None:
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        ws.send_json({"type": "connection_init", "payload": payload})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4403


def test_only_graphql_transport_ws_is_spoken(api: Api) -> None:
    with (
        pytest.raises(WebSocketDisconnect),
        api.client.websocket_connect("/graphql", subprotocols=["graphql-ws"]) as ws,
    ):
        ws.receive_json()


def test_a_foreign_origin_is_refused(api: Api) -> None:
    headers = {"origin": "https://evil.example"}
    with (
        pytest.raises(WebSocketDisconnect),
        api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL], headers=headers) as ws,
    ):
        ws.receive_json()


def test_another_tenants_execution_is_not_found(api: Api) -> None:
    execution_id = _start(api)
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        _connect(ws, api.keys[(TENANT_B, Role.ADMIN)])
        _subscribe(ws, execution_id)
        assert _next(ws) == {"__typename": "Problem", "code": "not-found"}


def test_the_subscription_ends_with_a_problem_when_its_token_expires(make_api: ApiFactory, jwks: Jwks) -> None:
    api = make_api(oidc_jwks_url=jwks.url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE)
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    short_lived = jwks.token(role="viewer", exp=int(time.time()) + 2)  # tenant acme: the tests' tenant A
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        _connect(ws, short_lived)
        _subscribe(ws, execution_id)
        assert _next(ws)["__typename"] == "ExecutionSnapshot"
        assert _next(ws) == {"__typename": "Problem", "code": "unauthenticated"}  # heartbeats until then
        assert ws.receive_json() == {"type": "complete", "id": "1"}


# --------------------------------------------------------------------------- credentials checked per operation

QUERY = "{ workflows { items { name } } }"
START = 'mutation { startExecution(input: {workflow: "hello", input: {who: "late"}}) { __typename } }'
OPERATIONS = {"query": QUERY, "mutation": START, "subscription": SUBSCRIPTION}


def _operate(ws: WebSocketTestSession, op_id: str, query: str, variables: dict[str, Any] | None = None) -> None:
    ws.send_json({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables or {}}})


def _query_result(ws: WebSocketTestSession, op_id: str) -> dict[str, Any]:
    """The data of a query run over the socket, which then completes."""
    message = ws.receive_json()
    assert message["type"] == "next" and message["id"] == op_id, message
    assert ws.receive_json() == {"type": "complete", "id": op_id}
    data: dict[str, Any] = message["payload"]["data"]
    return data


def _closed(ws: WebSocketTestSession) -> WebSocketDisconnect:
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value


def _execution_count(api: Api) -> int:
    return len(api.call("GET", "/v1/executions").json()["items"])


def test_after_its_token_expires_a_connection_starts_no_operation(make_api: ApiFactory, jwks: Jwks) -> None:
    api = make_api(oidc_jwks_url=jwks.url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE)
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    expires = int(time.time()) + 4
    short_lived = jwks.token(role="operator", exp=expires)  # tenant acme: the tests' tenant A
    closed = {}
    with contextlib.ExitStack() as stack:
        sockets = {
            kind: stack.enter_context(api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]))
            for kind in OPERATIONS
        }
        for ws in sockets.values():  # while the token is valid, operations run
            _connect(ws, short_lived)
            _operate(ws, "1", QUERY)
            assert _query_result(ws, "1") == {"workflows": {"items": [{"name": "hello"}]}}
        while time.time() <= expires:
            time.sleep(0.05)
        for kind, ws in sockets.items():  # one refused operation of each kind, each on its own socket
            _operate(ws, "2", OPERATIONS[kind], {"id": "anything"} if kind == "subscription" else None)
            closed[kind] = _closed(ws)
    assert {kind: (c.code, "expired" in c.reason) for kind, c in closed.items()} == dict.fromkeys(
        OPERATIONS, (4401, True)
    )
    assert _execution_count(api) == 0, "the refused mutation must not have run"


def test_a_revoked_key_starts_no_operation_and_other_keys_are_unaffected(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    revoked, other = api.keys[(TENANT_A, Role.OPERATOR)], api.keys[(TENANT_A, Role.EDITOR)]
    with (
        api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws,
        api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as unaffected,
    ):
        _connect(ws, revoked)
        _connect(unaffected, other)
        body = api.gql("mutation ($id: ID!) { revokeKey(id: $id) { __typename } }", {"id": parse_token(revoked)})
        assert body["data"]["revokeKey"]["__typename"] == "ApiKey"
        _operate(ws, "1", START)
        closed = _closed(ws)
        _operate(unaffected, "1", QUERY)
        assert _query_result(unaffected, "1") == {"workflows": {"items": [{"name": "hello"}]}}
    assert closed.code == 4401 and "revoked" in closed.reason
    assert _execution_count(api) == 0


def test_a_key_revoked_by_another_process_starts_no_operation_after_the_cache_lapses(api: Api) -> None:
    """``conveyor keys revoke`` writes the store only: an API process trusts its cached check of
    the key for at most KEY_CACHE_SECONDS (docs/api.md), after which no operation starts."""
    token = api.keys[(TENANT_A, Role.VIEWER)]
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        _connect(ws, token)
        _operate(ws, "1", QUERY)
        assert _query_result(ws, "1") == {"workflows": {"items": []}}  # the key is cached by now
        ApiKeys(api.service.store, api.service.clock).revoke(TENANT_A, parse_token(token) or "")
        time.sleep(KEY_CACHE_SECONDS)  # the documented bound: waited out, not asserted
        _operate(ws, "2", QUERY)
        closed = _closed(ws)
    assert closed.code == 4401 and "revoked" in closed.reason


def test_the_subscription_ends_with_a_problem_when_its_key_is_revoked(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    token = api.keys[(TENANT_A, Role.VIEWER)]
    with api.client.websocket_connect("/graphql", subprotocols=[PROTOCOL]) as ws:
        _connect(ws, token)
        _subscribe(ws, execution_id)
        assert _next(ws)["__typename"] == "ExecutionSnapshot"
        assert api.call("DELETE", f"/v1/keys/{parse_token(token)}").status_code == 200
        assert _next(ws) == {"__typename": "Problem", "code": "unauthenticated"}  # heartbeats until then
        assert ws.receive_json() == {"type": "complete", "id": "1"}
