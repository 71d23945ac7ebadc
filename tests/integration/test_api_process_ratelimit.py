"""GraphQL over WebSocket is rate-limited per operation on the production topology (issue 11, item 4).

Two real ``conveyor api`` processes share one Redis (the rate limiter's counters) and the
Firestore emulator; a real WebSocket client holds one ``graphql-transport-ws`` connection to
each and sends its operations alternately. Each connection and each operation counts once
against the key's limit, whichever process serves it, and a REST call with the same key
afterwards is refused too: the counters are the replicas' shared ones, not per process.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from engine.auth import Role
from engine.bootstrap import build_service
from engine.keys import ApiKeys
from engine.settings import Settings
from tests.services import conveyor_api, free_port

TENANT = "limited"
#: Per day, so the sliding window cannot roll over while the test runs.
LIMIT = 6
QUERY = "{ workflows { nextCursor } }"

pytestmark = [pytest.mark.backend, pytest.mark.timeout(180)]


async def _connect(url: str, token: str) -> Any:
    ws = await websockets.connect(url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")])
    await ws.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


async def _operation(ws: Any, op_id: str) -> dict[str, Any]:
    """One query; its ``next`` payload or its errors, as the server answered."""
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": QUERY}}))
    message: dict[str, Any] = json.loads(await ws.recv())
    if message["type"] == "next":
        assert json.loads(await ws.recv()) == {"type": "complete", "id": op_id}
    return message


def test_websocket_operations_share_the_rate_limit_of_every_api_process(
    tmp_path: Path, redis_server_url: str, firestore_emulator: str, unique_project: str
) -> None:
    options = {
        "store": "firestore",
        "firestore_project": unique_project,
        "redis_url": redis_server_url,
        "broker_url": redis_server_url,
        "default_queue": f"conveyor-limited-{uuid.uuid4().hex[:8]}",
        "rate_limit": f"{LIMIT}/day",
        "profile": "production",
    }
    service = build_service(Settings(_env_file=None, **options))  # type: ignore[call-arg, arg-type]
    try:
        token = ApiKeys(service.store, service.clock).create(TENANT, Role.VIEWER, "ws").token
    finally:
        service.store.close()

    with (
        conveyor_api({**options, "api_port": str(free_port())}, tmp_path / "a.log") as url_a,
        conveyor_api({**options, "api_port": str(free_port())}, tmp_path / "b.log") as url_b,
    ):

        async def main() -> list[dict[str, Any]]:
            sockets = [await _connect(u.replace("http://", "ws://") + "/graphql", token) for u in (url_a, url_b)]
            try:
                return [await _operation(sockets[n % 2], str(n)) for n in range(10)]
            finally:
                for ws in sockets:
                    await ws.close()

        answers = asyncio.run(main())
        rest = httpx.get(f"{url_a}/v1/workflows", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    served = [a for a in answers if a["type"] == "next" and "errors" not in a["payload"]]
    assert len(served) == LIMIT - 2, answers  # the two connections counted once each
    assert [a["payload"]["data"] for a in served] == [{"workflows": {"nextCursor": None}}] * (LIMIT - 2)
    limited = answers[len(served) :]
    assert len(limited) == 10 - len(served)
    for answer in limited:
        errors = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "rate-limited", answer
        assert errors[0]["extensions"]["retryAfter"] >= 1, answer
    assert rest.status_code == 429 and rest.json()["code"] == "rate-limited", rest.text
    assert int(rest.headers["Retry-After"]) >= 1
