"""Which ``Host`` a request may name, and which browser ``Origin`` may open a socket.

A DNS-rebinding page reaches the API under a name its attacker controls (``Host:
evil.example``) with a matching ``Origin``: a same-origin check that trusts ``Host`` lets it
in. So:

- ``settings.allowed_hosts`` lists the names the API answers to (``*`` any, ``*.example.com``
  a domain and its subdomains); a request naming another host is refused with 400 before any
  route runs. With authentication off (``CONVEYOR_AUTH_ENABLED=false``, every caller is an
  admin) only loopback names and hosts listed explicitly (not through ``*``) are accepted.
  Liveness, readiness and metrics answer any host: probes name the pod's address.
- A browser ``Origin`` must be in ``settings.allowed_origins``, or be the request's own
  origin on a host that is loopback or listed explicitly: a ``Host`` accepted only through
  ``*`` proves nothing about who served the page.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import send_problem
from engine.settings import Settings

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Operational endpoints probes and scrapers call by the pod's address.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def host_name(host: str | None) -> str | None:
    """The name in a ``Host`` header value, lowercased, without port or IPv6 brackets."""
    if not host:
        return None
    try:
        name = urlsplit(f"//{host.strip()}").hostname
    except ValueError:
        return None
    return name or None


def _matches(name: str, pattern: str) -> bool:
    pattern = pattern.lower()
    if pattern.startswith("*."):
        return name == pattern[2:] or name.endswith(pattern[1:])
    return name == pattern


def explicitly_allowed(settings: Settings, name: str | None) -> bool:
    """True for a loopback name or one an ``allowed_hosts`` entry other than ``*`` matches."""
    if name is None:
        return False
    return name in LOOPBACK_HOSTS or any(_matches(name, p) for p in settings.allowed_hosts if p != "*")


def host_allowed(settings: Settings, host: str | None) -> bool:
    name = host_name(host)
    if name is None:
        return False
    if explicitly_allowed(settings, name):
        return True
    return settings.auth_enabled and "*" in settings.allowed_hosts


def origin_allowed(settings: Settings, origin: str | None, host: str | None) -> bool:
    """Non-browser clients send no Origin; a browser's must be allow-listed or truly same-origin."""
    if origin is None:
        return True
    allowed = settings.allowed_origins
    if "*" in allowed or origin.rstrip("/") in {o.rstrip("/") for o in allowed}:
        return True
    same_origin = host is not None and origin.split("://", 1)[-1].rstrip("/") == host
    return same_origin and explicitly_allowed(settings, host_name(host))


class HostAllowList:
    """ASGI middleware refusing requests to a foreign ``Host``, and WebSocket handshakes from a
    foreign ``Origin`` (every WebSocket route, GraphQL's included, is checked here)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers", []) if k in (b"host", b"origin")}
        host = headers.get(b"host")
        if scope["type"] == "websocket":
            if host_allowed(self.settings, host) and origin_allowed(self.settings, headers.get(b"origin"), host):
                await self.app(scope, receive, send)
                return
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4403})  # before accept: the handshake gets 403
            return
        if host_allowed(self.settings, host):
            await self.app(scope, receive, send)
            return
        detail = "this host name is not served here (see CONVEYOR_ALLOWED_HOSTS)"
        await send_problem(scope, send, 400, "host-not-allowed", detail)
