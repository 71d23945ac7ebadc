"""Live streams of a real ``conveyor api`` process on the production topology (Redis live log
and broker, Firestore emulator): a quiet execution's SSE, WebSocket and GraphQL streams stay
open and keep receiving heartbeats (issue 11, item 1: they used to die after 5 s, when
redis-py's socket timeout cut every blocked ``XREAD``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from engine.adapters.events_redis import MAX_BLOCK_MS, SOCKET_TIMEOUT_SECONDS
from engine.auth import Role
from engine.bootstrap import build_service
from engine.keys import ApiKeys
from engine.settings import Settings
from tests.api.support import WAITER
from tests.services import conveyor_api, free_port

ROOT = Path(__file__).resolve().parents[2]
TENANT = "quiet"
#: The heartbeat interval the API is started with: the longest ``XREAD BLOCK`` (5 s, also the
#: old socket timeout), so every read of the idle stream blocks for the whole block time -- the
#: read the old 5 s socket timeout cut. (A heartbeat goes out after the read that reaches its
#: interval, so a longer one would only space the heartbeats out to the next multiple of 5 s.)
HEARTBEAT_SECONDS = MAX_BLOCK_MS / 1000
#: How long each stream must stay open: well past the socket timeout, five heartbeats.
QUIET_SECONDS = SOCKET_TIMEOUT_SECONDS + 12.0

pytestmark = [pytest.mark.backend, pytest.mark.timeout(180)]


@pytest.fixture
def api_process(
    tmp_path: Path, redis_server_url: str, firestore_emulator: str, unique_project: str
) -> Iterator[tuple[str, Settings]]:
    """A ``conveyor api`` process; yields its URL and the settings it runs with."""
    port = free_port()
    options = {
        "store": "firestore",
        "firestore_project": unique_project,
        "redis_url": redis_server_url,
        "broker_url": redis_server_url,
        "default_queue": f"conveyor-quiet-{uuid.uuid4().hex[:8]}",  # no worker consumes it
        "stream_heartbeat_seconds": str(HEARTBEAT_SECONDS),
        "profile": "production",
        "api_port": str(port),
    }
    with conveyor_api(options, tmp_path / "api.log") as url:
        yield url, Settings(_env_file=None, **options)  # type: ignore[call-arg, arg-type]


async def _sse(url: str, token: str, kinds: list[str]) -> None:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=HEARTBEAT_SECONDS * 2)) as client,
        client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))


async def _websocket(url: str, token: str, kinds: list[str]) -> None:
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        async for raw in ws:
            kinds.append(json.loads(raw)["type"])


async def _graphql(url: str, token: str, execution_id: str, kinds: list[str]) -> None:
    query = (
        "subscription ($id: ID!) { executionEvents(executionId: $id) { __typename "
        "... on Problem { code message } } }"
    )
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"id": execution_id}}})
        )
        async for raw in ws:
            message = json.loads(raw)
            assert message["type"] == "next", message
            kinds.append(message["payload"]["data"]["executionEvents"]["__typename"])


async def _open_for(seconds: float, stream: Any) -> bool:
    """Whether a stream was still open after ``seconds`` (then it is closed)."""
    task = asyncio.ensure_future(stream)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        task.result()  # a failure shows its cause
        return False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return True


def test_quiet_streams_stay_open_with_heartbeats_on_redis(api_process: tuple[str, Settings]) -> None:
    url, settings = api_process
    service = build_service(settings)
    try:
        token = ApiKeys(service.store, service.clock).create(TENANT, Role.VIEWER, "quiet").token
        service.apply_workflow(TENANT, WAITER)
        execution_id = service.start(TENANT, "waiter", {}).execution.id  # its step stays QUEUED: quiet
    finally:
        service.store.close()
    ws_url = url.replace("http://", "ws://")
    collected: dict[str, list[str]] = {"sse": [], "websocket": [], "graphql": []}
    events = f"/v1/executions/{execution_id}/events"

    async def main() -> list[bool]:
        return await asyncio.gather(
            _open_for(QUIET_SECONDS, _sse(url + events, token, collected["sse"])),
            _open_for(QUIET_SECONDS, _websocket(ws_url + events, token, collected["websocket"])),
            _open_for(QUIET_SECONDS, _graphql(f"{ws_url}/graphql", token, execution_id, collected["graphql"])),
        )

    still_open = asyncio.run(main())
    assert still_open == [True, True, True], collected
    expected = int(QUIET_SECONDS // HEARTBEAT_SECONDS) - 1
    assert collected["sse"][0] == "snapshot" and collected["sse"].count("heartbeat") >= expected, collected
    assert collected["websocket"][0] == "snapshot" and collected["websocket"].count("heartbeat") >= expected
    assert collected["graphql"][0] == "ExecutionSnapshot", collected
    assert collected["graphql"].count("StreamHeartbeat") >= expected, collected
    assert "error" not in collected["sse"] + collected["websocket"] and "Problem" not in collected["graphql"]

