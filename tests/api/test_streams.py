"""Progress streams: WebSocket and SSE at /v1/executions/{id}/events, and the feed behind them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
import websockets.sync.client
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from api.runtime import StreamOptions
from api.streams import Change, ExecutionFeed, SlowConsumer, Snapshot
from engine.adapters.events_memory import MemoryEventLog
from engine.auth import Role
from engine.keys import ApiKeys, parse_token
from engine.records import EventRecord
from tests.api.conftest import FAST_STREAMS, Api, ApiFactory
from tests.api.support import HELLO, TENANT_A, TENANT_B, WAITER, bearer
from tests.jwks import AUDIENCE, ISSUER, Jwks
from tests.services import free_port, wait_for

pytestmark = pytest.mark.timeout(60)


def _start(api: Api, workflow: dict[str, Any] = HELLO) -> str:
    api.call("PUT", f"/v1/workflows/{workflow['name']}", json=workflow)
    body = {"workflow": workflow["name"], "input": {"who": "s"} if workflow is HELLO else {}}
    return api.call("POST", "/v1/executions", json=body).json()["id"]


def _history(api: Api, execution_id: str) -> list[str]:
    page = api.call("GET", f"/v1/executions/{execution_id}/history", params={"limit": 500}).json()
    return [e["id"] for e in page["items"]]


def _ws_next(ws: WebSocketTestSession) -> dict[str, Any]:
    while True:
        message = ws.receive_json()
        if message["type"] != "heartbeat":
            return message


def _ws_until_done(ws: WebSocketTestSession) -> list[dict[str, Any]]:
    received = []
    while True:
        message = _ws_next(ws)
        assert message["type"] == "event", message
        received.append(message)
        if message["event"]["type"] == "execution.succeeded":
            return received


def _token(api: Api, tenant: str = TENANT_A, role: Role = Role.VIEWER) -> str:
    return api.keys[(tenant, role)]


# --------------------------------------------------------------------------- WebSocket


def test_websocket_snapshot_events_and_resume_without_gaps_or_duplicates(api: Api) -> None:
    execution_id = _start(api)
    before = _history(api, execution_id)
    url = f"/v1/executions/{execution_id}/events"
    protocols = ["conveyor.v1", f"bearer.{_token(api)}"]
    with api.client.websocket_connect(url, subprotocols=protocols) as ws:
        assert ws.accepted_subprotocol == "conveyor.v1"  # the token is never echoed back
        snapshot = _ws_next(ws)
        assert snapshot["type"] == "snapshot" and snapshot["reset"] is False
        assert snapshot["execution"]["status"] == "RUNNING"
        assert [s["key"] for s in snapshot["execution"]["steps"]] == ["greet"]
        api.driver.run_once()
        first = [_ws_next(ws) for _ in range(3)]
    api.driver.run_all()
    with api.client.websocket_connect(f"{url}?after={first[-1]['cursor']}", subprotocols=protocols) as ws:
        rest = _ws_until_done(ws)
    seen = [m["event"]["id"] for m in first + rest]
    assert len(seen) == len(set(seen))
    assert seen == _history(api, execution_id)[len(before) :]


def test_websocket_authenticates_by_first_message_or_header(api: Api) -> None:
    execution_id = _start(api)
    url = f"/v1/executions/{execution_id}/events"
    with api.client.websocket_connect(url) as ws:
        ws.send_json({"type": "auth", "token": _token(api)})
        assert _ws_next(ws)["type"] == "snapshot"
    with api.client.websocket_connect(url, headers=bearer(_token(api))) as ws:
        assert _ws_next(ws)["type"] == "snapshot"


@pytest.mark.parametrize(
    "first_message", [None, {"type": "auth", "token": "cvk_0123456789abcdef_wrong"}, {"type": "hello"}]
)
def test_websocket_without_valid_credentials_is_closed_4401(api: Api, first_message: Any) -> None:
    execution_id = _start(api)
    # A token in the query string is not a credential: it would end up in access logs.
    url = f"/v1/executions/{execution_id}/events?token={_token(api)}"
    with api.client.websocket_connect(url) as ws:
        if first_message is not None:
            ws.send_json(first_message)
        message = ws.receive_json()
        assert message["type"] == "error" and message["problem"]["status"] == 401
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


def test_websocket_from_a_foreign_origin_is_refused(api: Api) -> None:
    execution_id = _start(api)
    headers = {"origin": "https://evil.example", **bearer(_token(api))}
    url = f"/v1/executions/{execution_id}/events"
    with pytest.raises(WebSocketDisconnect) as refused, api.client.websocket_connect(url, headers=headers):
        pass
    assert refused.value.code == 4403
    allowed = {"origin": "http://allowed.example", **bearer(_token(api))}
    with api.client.websocket_connect(f"/v1/executions/{execution_id}/events", headers=allowed) as ws:
        assert _ws_next(ws)["type"] == "snapshot"


def test_websocket_of_another_tenant_is_not_found_and_carries_no_data(api: Api) -> None:
    execution_id = _start(api)
    with api.client.websocket_connect(
        f"/v1/executions/{execution_id}/events", headers=bearer(_token(api, TENANT_B, Role.ADMIN))
    ) as ws:
        message = ws.receive_json()
        assert message["type"] == "error" and message["problem"]["status"] == 404
        assert "steps" not in json.dumps(message) and "hello" not in json.dumps(message)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4404


def test_websocket_sends_heartbeats_when_idle(api: Api) -> None:
    execution_id = _start(api, WAITER)
    with api.client.websocket_connect(f"/v1/executions/{execution_id}/events", headers=bearer(_token(api))) as ws:
        assert ws.receive_json()["type"] == "snapshot"
        assert ws.receive_json()["type"] == "heartbeat"


def test_an_expired_cursor_gets_a_fresh_snapshot(make_api: ApiFactory) -> None:
    api = make_api(events=MemoryEventLog(maxlen=3))
    execution_id = _start(api)
    url = f"/v1/executions/{execution_id}/events"
    with api.client.websocket_connect(url, headers=bearer(_token(api))) as ws:
        snapshot = _ws_next(ws)
    api.driver.run_all()  # far more than 3 events: the snapshot's cursor is trimmed away
    with api.client.websocket_connect(f"{url}?after={snapshot['cursor']}", headers=bearer(_token(api))) as ws:
        fresh = _ws_next(ws)
    assert fresh["type"] == "snapshot" and fresh["reset"] is True
    assert fresh["execution"]["status"] == "SUCCEEDED"


def test_a_malformed_cursor_is_refused(api: Api) -> None:
    execution_id = _start(api)
    with api.client.websocket_connect(
        f"/v1/executions/{execution_id}/events?after=not-a-cursor", headers=bearer(_token(api))
    ) as ws:
        assert ws.receive_json()["problem"]["status"] == 422


class DroppingSink:
    """A live log that loses some publishes, as when Redis blips after the store committed."""

    def __init__(self, log: MemoryEventLog, drop: set[str]) -> None:
        self.log = log
        self.drop = drop

    def publish(self, events: Sequence[EventRecord]) -> None:
        self.log.publish([e for e in events if e.type not in self.drop])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


def _dropping_api(make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch, drop: str) -> Api:
    monkeypatch.setattr("api.streams.GAP_GRACE_SECONDS", 0.0)
    return make_api(events=DroppingSink(MemoryEventLog(), drop={drop}))


def test_a_lost_final_event_is_filled_in_from_the_store(make_api: ApiFactory, monkeypatch) -> None:
    api = _dropping_api(make_api, monkeypatch, "execution.succeeded")
    execution_id = _start(api)
    before = _history(api, execution_id)
    with api.client.websocket_connect(f"/v1/executions/{execution_id}/events", headers=bearer(_token(api))) as ws:
        assert _ws_next(ws)["type"] == "snapshot"
        api.driver.run_all()
        received = _ws_until_done(ws)  # execution.succeeded never reached the live log
    ids = [m["event"]["id"] for m in received]
    assert ids == _history(api, execution_id)[len(before) :]


def test_a_hole_in_the_middle_is_replaced_by_a_fresh_snapshot(make_api: ApiFactory, monkeypatch) -> None:
    api = _dropping_api(make_api, monkeypatch, "step.succeeded")
    execution_id = _start(api)
    with api.client.websocket_connect(f"/v1/executions/{execution_id}/events", headers=bearer(_token(api))) as ws:
        assert _ws_next(ws)["type"] == "snapshot"
        api.driver.run_all()
        while True:
            message = _ws_next(ws)
            if message["type"] == "snapshot":
                break
            assert message["event"]["type"] != "step.succeeded"
    assert message["reset"] is True
    assert message["execution"]["status"] == "SUCCEEDED"
    assert [s["status"] for s in message["execution"]["steps"]] == ["SUCCEEDED", "SUCCEEDED"]


# --------------------------------------------------------------------------- SSE over a real server


@contextlib.contextmanager
def serving(api: Api) -> Iterator[str]:
    """Serve ``api`` with uvicorn on a free port; its base URL."""
    port = free_port()
    config = uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(10)


@pytest.fixture
def server(api: Api) -> Iterator[str]:
    with serving(api) as url:
        yield url


def _sse_messages(response: httpx.Response) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
    """(id, event name, data) per SSE message."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                yield fields.get("id"), fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def test_sse_snapshot_events_and_resume_with_last_event_id(api: Api, server: str) -> None:
    execution_id = _start(api)
    before = _history(api, execution_id)
    url = f"{server}/v1/executions/{execution_id}/events"
    seen: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", url, headers=bearer(_token(api))) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            messages = _sse_messages(response)
            sse_id, name, snapshot = next(messages)
            assert name == "snapshot" and sse_id == snapshot["cursor"]
            api.driver.run_once()
            while len(seen) < 3:
                sse_id, name, data = next(messages)
                if name == "event":
                    assert sse_id == data["cursor"]
                    seen.append((sse_id, data["event"]))
        api.driver.run_all()
        headers = {**bearer(_token(api)), "Last-Event-ID": seen[-1][0]}
        with client.stream("GET", url, headers=headers) as response:
            for sse_id, name, data in _sse_messages(response):
                assert name != "snapshot", "a valid Last-Event-ID resumes without a snapshot"
                if name == "event":
                    seen.append((str(sse_id), data["event"]))
                    if data["event"]["type"] == "execution.succeeded":
                        break
    event_ids = [event["id"] for _, event in seen]
    assert len({cursor for cursor, _ in seen}) == len(seen)
    assert event_ids == _history(api, execution_id)[len(before) :]


def test_sse_requires_credentials_and_hides_other_tenants(api: Api, server: str) -> None:
    execution_id = _start(api)
    url = f"{server}/v1/executions/{execution_id}/events"
    with httpx.Client(timeout=10) as client:
        assert client.get(url).status_code == 401
        assert client.get(url, headers=bearer(_token(api, TENANT_B, Role.ADMIN))).status_code == 404
        foreign = client.get(url, headers={"origin": "https://evil.example", **bearer(_token(api))})
        assert foreign.status_code == 403


# --------------------------------------------------------------------------- credentials that expire


@pytest.fixture
def oidc_api(make_api: ApiFactory, jwks: Jwks) -> Api:
    return make_api(oidc_jwks_url=jwks.url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE)


def _short_lived(jwks: Jwks) -> str:
    """A viewer JWT of tenant acme (the tests' tenant A) that expires within two seconds."""
    return jwks.token(role="viewer", exp=int(time.time()) + 2)


def test_a_websocket_is_closed_4401_when_its_token_expires(oidc_api: Api, jwks: Jwks) -> None:
    execution_id = _start(oidc_api, WAITER)  # waits an hour: nothing else would end the stream
    url = f"/v1/executions/{execution_id}/events"
    with oidc_api.client.websocket_connect(url, headers=bearer(_short_lived(jwks))) as ws:
        assert ws.receive_json()["type"] == "snapshot"
        message = _ws_next(ws)  # heartbeats until the token expires
        assert message["type"] == "error" and message["problem"]["status"] == 401
        assert "expired" in message["problem"]["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


def test_an_sse_stream_ends_with_an_error_event_when_its_token_expires(oidc_api: Api, jwks: Jwks) -> None:
    execution_id = _start(oidc_api, WAITER)
    with serving(oidc_api) as base, httpx.Client(timeout=10) as client:
        url = f"{base}/v1/executions/{execution_id}/events"
        with client.stream("GET", url, headers=bearer(_short_lived(jwks))) as response:
            assert response.status_code == 200
            received = [(name, data) for _, name, data in _sse_messages(response)]  # until the server ends it
    names = [name for name, _ in received]
    assert names[0] == "snapshot" and set(names[1:-1]) <= {"heartbeat"} and names[-1] == "error"
    assert received[-1][1]["problem"]["status"] == 401


# --------------------------------------------------------------------------- API keys revoked while streaming


def test_a_websocket_is_closed_4401_when_its_api_key_is_revoked(make_api: ApiFactory) -> None:
    # Heartbeats come more often than the key is checked: a busy stream is checked all the same.
    api = make_api(streams=StreamOptions(heartbeat_seconds=0.05, block_ms=50, recheck_seconds=0.5))
    execution_id = _start(api, WAITER)
    token = _token(api)
    with api.client.websocket_connect(f"/v1/executions/{execution_id}/events", headers=bearer(token)) as ws:
        assert ws.receive_json()["type"] == "snapshot"
        assert api.call("DELETE", f"/v1/keys/{parse_token(token)}").status_code == 200
        message = _ws_next(ws)  # heartbeats until the next check of the key
        assert message["type"] == "error" and message["problem"]["status"] == 401
        assert "revoked" in message["problem"]["detail"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401


def test_an_sse_stream_ends_when_its_api_key_is_revoked_by_another_process(api: Api) -> None:
    """Revoked in the store only (as by ``conveyor keys revoke``), so this API process learns it
    when its key cache lapses: the stream ends within KEY_CACHE_SECONDS + recheck_seconds."""
    execution_id = _start(api, WAITER)
    token = _token(api)
    with serving(api) as base, httpx.Client(timeout=30) as client:
        url = f"{base}/v1/executions/{execution_id}/events"
        with client.stream("GET", url, headers=bearer(token)) as response:
            messages = _sse_messages(response)
            assert next(messages)[1] == "snapshot"
            ApiKeys(api.service.store, api.service.clock).revoke(TENANT_A, parse_token(token) or "")
            names = [name for _, name, _ in messages]  # until the server ends the response
    assert set(names[:-1]) <= {"heartbeat"} and names[-1] == "error"


def test_a_stream_opened_with_another_key_is_unaffected_by_a_revocation(api: Api) -> None:
    execution_id = _start(api)
    url = f"/v1/executions/{execution_id}/events"
    with api.client.websocket_connect(url, headers=bearer(_token(api, role=Role.OPERATOR))) as ws:
        assert ws.receive_json()["type"] == "snapshot"
        assert api.call("DELETE", f"/v1/keys/{parse_token(_token(api))}").status_code == 200
        api.driver.run_all()
        assert _ws_until_done(ws)[-1]["event"]["type"] == "execution.succeeded"


def test_a_websocket_stream_ends_as_soon_as_its_client_goes_away(make_api: ApiFactory) -> None:
    """Not at its next heartbeat: until then a gone client's feed would hold a Redis read, and a
    server shutting down would wait for it."""
    api = make_api(streams=StreamOptions(heartbeat_seconds=3600, block_ms=50))
    execution_id = _start(api, WAITER)  # quiet: nothing to send after the snapshot
    registry = api.app.state.runtime.metrics.registry

    def open_streams() -> float:
        return float(registry.get_sample_value("conveyor_api_open_streams", {"transport": "websocket"}) or 0)

    with serving(api) as url:
        events = f"{url.replace('http', 'ws', 1)}/v1/executions/{execution_id}/events"
        protocols = [websockets.Subprotocol("conveyor.v1"), websockets.Subprotocol(f"bearer.{_token(api)}")]
        with websockets.sync.client.connect(events, subprotocols=protocols) as ws:
            assert json.loads(ws.recv())["type"] == "snapshot"
            assert open_streams() == 1
        wait_for(lambda: open_streams() == 0, 10, "the stream of the gone client ended")


# --------------------------------------------------------------------------- the feed itself


async def test_a_client_that_falls_behind_is_disconnected(api: Api) -> None:
    execution_id = _start(api, WAITER)
    runtime = api.app.state.runtime
    runtime.streams = StreamOptions(heartbeat_seconds=10, block_ms=50, buffer_size=4)
    feed = ExecutionFeed(runtime, await runtime.auth.login(_token(api)), execution_id)
    messages = feed.messages()
    assert isinstance(await anext(messages), Snapshot)
    log = api.service.events
    template = api.service.events_after(TENANT_A, execution_id, None)[0]
    for n in range(20):  # the client reads nothing while 20 events arrive
        log.publish([EventRecord(f"x{n:04d}", execution_id, TENANT_A, "step.noise", template.at)])
    await asyncio.sleep(0.3)
    with pytest.raises(SlowConsumer):
        while True:
            message = await anext(messages)
            assert isinstance(message, Change)
    runtime.streams = FAST_STREAMS


def _websocket_routes() -> list[str]:
    """Every WebSocket route of the REST routers (the OpenAPI document does not list them)."""
    import importlib
    import pkgutil

    from fastapi.routing import APIWebSocketRoute

    import api.routes

    paths = []
    for module_info in pkgutil.iter_modules(api.routes.__path__):
        module = importlib.import_module(f"api.routes.{module_info.name}")
        paths += [r.path for r in module.router.routes if isinstance(r, APIWebSocketRoute)]
    assert paths
    return paths


@pytest.mark.parametrize("path", _websocket_routes())
def test_every_websocket_route_hides_other_tenants(api: Api, path: str) -> None:
    execution_id = _start(api)
    url = path.replace("{execution_id}", execution_id)
    assert "{" not in url, f"{path}: give its path parameters a tenant-A value here"
    with api.client.websocket_connect(url, headers=bearer(_token(api, TENANT_B, Role.ADMIN))) as ws:
        message = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert message["type"] == "error" and message["problem"]["status"] == 404
    assert closed.value.code == 4404
    text = json.dumps(message)
    assert "steps" not in text and "RUNNING" not in text


def test_websocket_resume_on_the_redis_live_log(make_api: ApiFactory, redis_server_url: str) -> None:
    from engine.adapters.events_redis import RedisEventLog

    api = make_api(events=RedisEventLog(redis_server_url))
    execution_id = _start(api)
    before = _history(api, execution_id)
    url = f"/v1/executions/{execution_id}/events"
    with api.client.websocket_connect(url, headers=bearer(_token(api))) as ws:
        assert _ws_next(ws)["type"] == "snapshot"
        api.driver.run_once()
        first = [_ws_next(ws) for _ in range(3)]
    api.driver.run_all()
    with api.client.websocket_connect(f"{url}?after={first[-1]['cursor']}", headers=bearer(_token(api))) as ws:
        rest = _ws_until_done(ws)
    seen = [m["event"]["id"] for m in first + rest]
    assert seen == _history(api, execution_id)[len(before) :]
