"""Request body size limit, enforced before the body is buffered.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted
as it arrives and refused as soon as it passes the limit, so a client can never make the
API hold more than ``max_bytes`` of one request in memory.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import send_problem
from engine.errors import PayloadTooLarge


class BodySizeLimit:
    """ASGI middleware answering 413 for bodies larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(scope, send, self.max_bytes)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now and tell the app the client left: it stops reading, and
                    # whatever it answers to that is dropped below.
                    refused = True
                    await _refuse(scope, send, self.max_bytes)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted, guarded_send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: Scope, send: Send, max_bytes: int) -> None:
    detail = f"the request body exceeds {max_bytes} bytes"
    await send_problem(scope, send, 413, PayloadTooLarge.code, detail, close=True)
