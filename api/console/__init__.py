"""The web console at ``/ui``: a static single-page app over the public API.

Every file ships inside this package (no CDN, no build step): ``static/index.html``,
``app.js`` (plain ES modules) and ``style.css``. The browser keeps the API key the user signs
in with in ``sessionStorage`` (gone with the tab) and calls ``/v1`` with it as a bearer token,
and follows an execution live over the API's WebSocket stream (the key offered as a
subprotocol, never in a URL). So the console has exactly the API's authentication, roles and
tenant isolation: it adds no endpoint and no cookie that could be ridden by another site.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
MOUNT = "/ui"

#: The console runs only its own script and style and talks only to its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class ConsoleHeaders:
    """Security headers on every console response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-cache"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI) -> None:
    """Serve the console at ``/ui`` (``/ui/`` is its page)."""
    app.mount(MOUNT, ConsoleHeaders(StaticFiles(directory=STATIC, html=True)), name="console")
