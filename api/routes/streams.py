"""``/v1/executions/{id}/events``: live progress over WebSocket, and its SSE twin on GET.

Both carry the messages of :class:`api.streams.ExecutionFeed` as JSON: ``snapshot``,
``event`` and ``heartbeat``, each with the ``cursor`` to resume from.

Credentials never go in the URL (URLs end up in logs and browser history):

- SSE: ``Authorization: Bearer …``; resume with ``Last-Event-ID`` (or ``?after=``).
- WebSocket: ``Authorization`` (non-browser clients), or the subprotocols
  ``["conveyor.v1", "bearer.<token>"]`` (the server selects ``conveyor.v1`` and never echoes
  the token), or a first message ``{"type": "auth", "token": "…", "after": "…"}``.

Browsers send ``Origin``: a cross-origin request must come from ``settings.allowed_origins``
(:mod:`api.hosts`; WebSocket handshakes are checked by its middleware).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, WebSocket
from starlette.responses import StreamingResponse
from starlette.types import Message as AsgiMessage
from starlette.types import Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.auth import Credential, bearer_token
from api.bodies import StrictRoute
from api.deps import PrincipalDep, RuntimeDep, guard, runtime
from api.hosts import origin_allowed
from api.problems import conveyor_error_response, problem_body, responses
from api.runtime import Runtime
from api.streams import ExecutionFeed, SlowConsumer, message_body
from api.visibility import note_caller
from engine.auth import Role
from engine.errors import AuthenticationFailed, ConveyorError, PermissionDenied

router = APIRouter(prefix="/v1/executions", tags=["executions"], route_class=StrictRoute)

SUBPROTOCOL = "conveyor.v1"
TOKEN_SUBPROTOCOL = "bearer."  # noqa: S105  # a prefix, not a secret
#: A client that has not taken one message for this long is disconnected.
SEND_TIMEOUT_SECONDS = 30.0
#: WebSocket close codes (4000-4999 are the application's).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_SLOW_CONSUMER = 4408

ExecutionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


# --------------------------------------------------------------------------- SSE


def _sse(message: dict[str, Any]) -> bytes:
    lines = []
    if message["type"] in ("snapshot", "event"):
        lines.append(f"id: {message['cursor']}")
    lines.append(f"event: {message['type']}")
    lines.append(f"data: {json.dumps(message, separators=(',', ':'))}")
    return ("\n".join(lines) + "\n\n").encode()


class EventStreamResponse(StreamingResponse):
    """A streaming response whose every write must complete within ``send_timeout``.

    A client that stops reading stalls the write (TCP flow control); the timeout turns that
    into a disconnect instead of a connection held open forever.
    """

    def __init__(self, content: AsyncIterator[bytes], send_timeout: float) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.send_timeout = send_timeout

    async def stream_response(self, send: Send) -> None:
        async def timed(message: AsgiMessage) -> None:
            await asyncio.wait_for(send(message), self.send_timeout)

        try:
            await super().stream_response(timed)
        except TimeoutError:
            return  # the server closes the connection of an unfinished response


async def _sse_body(feed: ExecutionFeed, rt: Runtime) -> AsyncIterator[bytes]:
    rt.metrics.streams.labels("sse").inc()
    try:
        yield b"retry: 3000\n\n"
        async for message in feed.messages():
            yield _sse(message_body(message))
    except SlowConsumer as exc:
        rt.metrics.slow_consumers.labels("sse").inc()
        yield _sse({"type": "error", "problem": problem_body(429, "slow-consumer", str(exc))})
    except ConveyorError as exc:
        yield _sse({"type": "error", "problem": problem_body(exc.status, exc.code, exc.message)})
    finally:
        rt.metrics.streams.labels("sse").dec()


@router.get(
    "/{execution_id}/events",
    summary="Live progress (Server-Sent Events)",
    description="A `snapshot` event, then one `event` per transition, and `heartbeat`s. Resume with "
    "`Last-Event-ID` (browsers do it on their own): no gaps, no duplicates; an expired cursor "
    "gets a fresh snapshot with `reset: true`.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream"}, **responses(404)},
    **guard(Role.VIEWER),
)
async def sse(
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    execution_id: ExecutionId,
    after: Annotated[str | None, Query(max_length=64, description="Resume after this cursor")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> StreamingResponse:
    if not origin_allowed(rt.settings, request.headers.get("origin"), request.headers.get("host")):
        raise PermissionDenied("this origin is not allowed")
    credential = Credential(principal, bearer_token(request.headers.get("authorization")))
    feed = ExecutionFeed(rt, credential, execution_id, last_event_id or after)
    await feed.check()  # 404 / 422 as a problem response, before the stream starts
    return EventStreamResponse(_sse_body(feed, rt), SEND_TIMEOUT_SECONDS)


# --------------------------------------------------------------------------- WebSocket


def _offered_token(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The token from the Authorization header or a ``bearer.<token>`` subprotocol, and the subprotocol to select."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    selected = SUBPROTOCOL if SUBPROTOCOL in offered else None
    token = bearer_token(websocket.headers.get("authorization"))
    for protocol in offered:
        if protocol.startswith(TOKEN_SUBPROTOCOL):
            token = token or protocol[len(TOKEN_SUBPROTOCOL) :]
    return token, selected


async def _close(websocket: WebSocket, code: int, problem: dict[str, Any] | None = None) -> None:
    if websocket.application_state == WebSocketState.CONNECTED and problem is not None:
        await websocket.send_json({"type": "error", "problem": problem})
    await websocket.close(code)


async def _authenticate(websocket: WebSocket, rt: Runtime, token: str | None) -> tuple[Credential, str | None]:
    """The credential (and a cursor sent with the auth message); the socket is accepted by now."""
    after = websocket.query_params.get("after")
    if token is None:
        try:
            first = await asyncio.wait_for(websocket.receive_json(), rt.streams.auth_timeout_seconds)
        except (TimeoutError, ValueError, KeyError):
            raise AuthenticationFailed('send {"type": "auth", "token": …} first') from None
        if not isinstance(first, dict) or first.get("type") != "auth" or not isinstance(first.get("token"), str):
            raise AuthenticationFailed('send {"type": "auth", "token": …} first')
        token = first["token"]
        after = first.get("after") if isinstance(first.get("after"), str) else after
    credential = await rt.auth.login(token)
    await rt.limiter.hit(credential.principal)
    credential.principal.require(Role.VIEWER)
    note_caller(credential.principal)
    return credential, after


@router.websocket("/{execution_id}/events")
async def websocket_events(websocket: WebSocket, execution_id: str) -> None:
    """Live progress over WebSocket (see the module docstring for authentication)."""
    rt = runtime(websocket)  # Host and Origin were checked by api.hosts.HostAllowList
    token, subprotocol = _offered_token(websocket)
    await websocket.accept(subprotocol=subprotocol)
    try:
        credential, after = await _authenticate(websocket, rt, token)
        feed = ExecutionFeed(rt, credential, execution_id, after)
        await feed.check()
    except ConveyorError as exc:
        code = {401: CLOSE_UNAUTHENTICATED, 403: CLOSE_FORBIDDEN, 404: CLOSE_NOT_FOUND}.get(
            exc.status, 4000 + exc.status
        )
        await _close(websocket, code, conveyor_error_body(exc))
        return
    await _pump(websocket, feed, rt)


def conveyor_error_body(exc: ConveyorError) -> dict[str, Any]:
    """The problem document the REST API answers for ``exc``."""
    body: dict[str, Any] = json.loads(bytes(conveyor_error_response(None, exc).body))
    return body


async def _send_all(websocket: WebSocket, feed: ExecutionFeed) -> None:
    async for message in feed.messages():
        await asyncio.wait_for(websocket.send_json(message_body(message)), SEND_TIMEOUT_SECONDS)


async def _until_disconnected(websocket: WebSocket) -> None:
    """Return once the client closed the socket (or the server is shutting down); whatever the
    client sends after authenticating is ignored."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _pump(websocket: WebSocket, feed: ExecutionFeed, rt: Runtime) -> None:
    """Send the feed until it ends or the client goes away. The socket is watched while the
    feed is quiet: otherwise a gone client's feed (and its blocked Redis read) would live on
    until its next heartbeat, and a server shutting down would wait for that."""
    rt.metrics.streams.labels("websocket").inc()
    sending = asyncio.ensure_future(_send_all(websocket, feed))
    watching = asyncio.ensure_future(_until_disconnected(websocket))
    try:
        await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
        if sending.done():
            sending.result()  # how the feed ended: the cases below
    except (SlowConsumer, TimeoutError) as exc:
        rt.metrics.slow_consumers.labels("websocket").inc()
        await _close(websocket, CLOSE_SLOW_CONSUMER, problem_body(429, "slow-consumer", str(exc) or "too slow"))
    except (WebSocketDisconnect, RuntimeError):
        return  # the client went away
    except ConveyorError as exc:
        await _close(websocket, 4000 + exc.status, conveyor_error_body(exc))
    finally:
        rt.metrics.streams.labels("websocket").dec()
        for task in (sending, watching):
            task.cancel()
        await asyncio.wait({sending, watching})  # the feed's producer is cancelled with it
