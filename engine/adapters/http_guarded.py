"""Outbound HTTP with a connect-time SSRF guard: httpx over a vetting httpcore network backend.

How the guard holds (the policy itself is :mod:`engine.egress`):

- Before a request (and before each redirect hop) the URL's scheme, port and host name are
  checked, so ``file://``, ``gopher://``, odd ports, metadata names and literal internal
  addresses in any spelling are refused without touching the network.
- The connection is opened by :class:`VettingBackend`, the network backend of the httpcore
  pool under httpx: it resolves the host once, checks every address it got, and connects to
  one of exactly those addresses. No second lookup happens between the check and the
  connect, so DNS rebinding has no window. TLS still verifies the certificate against the
  URL's host and sends it as SNI (httpcore's ``start_tls`` uses the origin's name), and the
  ``Host`` header is the URL's.
- Redirects are followed here, not by httpx, at most ``max_redirects`` of them; every hop
  passes the same checks.
- ``trust_env=False``: no proxy, netrc or certificate settings come from the environment.
- One deadline covers the whole request, redirects and body included; the body is read in
  chunks and refused once it passes ``max_response_bytes`` (after decompression).

Retries are not done here: a step's retry policy decides them (the ``http`` step allows
them only for idempotent methods unless configured otherwise).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from engine.egress import EgressPolicy, IPAddress, parse_address
from engine.errors import EgressDenied, OutboundRequestFailed
from engine.ports import HttpRequest, HttpResponse, Resolver

_SCHEME_PORTS = {"http": 80, "https": 443}


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), without blocking the event loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class VettingBackend(httpcore.AsyncNetworkBackend):
    """Resolves once, vets every address, then connects to a vetted address (never the name)."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver, inner: httpcore.AsyncNetworkBackend | None = None):
        self.policy = policy
        self.resolver = resolver
        self.inner = inner or httpcore.AnyIOBackend()

    async def vetted(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to; ``EgressDenied`` if any address of ``host`` is refused."""
        literal = parse_address(host)
        if literal is not None:
            addresses = [literal]
        else:
            addresses = []
            for text in await self.resolver.resolve(host, port):
                try:
                    addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
                except ValueError:
                    raise EgressDenied(f"{host} resolved to {text!r}, which is not an address", "unresolved") from None
        self.policy.vet(host, port, addresses)
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.vetted(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # vet() refuses an empty address list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressDenied("connections to unix sockets are not allowed", "scheme")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, backend: VettingBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx offers no parameter for the pool's network backend: replace the pool it built
        # with one whose every connection goes through the vetting backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=backend, http1=True, http2=False, retries=0
        )


class GuardedHttpClient:
    """The :class:`~engine.ports.HttpClient` adapter: httpx under the egress policy."""

    def __init__(
        self,
        policy: EgressPolicy,
        resolver: Resolver | None = None,
        *,
        timeout: float = 30.0,
        max_response_bytes: int = 1024 * 1024,
        max_redirects: int = 5,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.backend = VettingBackend(policy, resolver or SystemResolver())
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.max_redirects = max_redirects
        self._ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)

    def check_url(self, url: httpx.URL) -> None:
        """Refuse a URL by scheme, port or host before anything is resolved or opened."""
        scheme = url.scheme.lower()
        port = url.port or _SCHEME_PORTS.get(scheme, 0)
        self.policy.check_target(scheme, url.host, port)

    async def send(self, request: HttpRequest) -> HttpResponse:
        timeout = request.timeout or self.timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._send(request, timeout)
        except TimeoutError:
            raise OutboundRequestFailed(
                f"{request.method} {request.url} took longer than {timeout:g}s", "timeout", transient=True
            ) from None

    async def _send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        try:
            url = httpx.URL(request.url)
        except httpx.InvalidURL as exc:
            raise EgressDenied(f"{request.url!r} is not a valid URL: {exc}", "url") from None
        self.check_url(url)
        limit = request.max_response_bytes or self.max_response_bytes
        transport = _GuardedTransport(self.backend, self._ssl_context)
        async with httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=timeout
        ) as client:
            outgoing = client.build_request(request.method, url, headers=dict(request.headers), content=request.body)
            for hop in range(self.max_redirects + 1):
                self.check_url(outgoing.url)
                response = await self._exchange(client, outgoing)
                if not (request.follow_redirects and response.next_request is not None):
                    body = await self._read(response, limit)
                    return HttpResponse(response.status_code, dict(response.headers), body, str(response.url), hop)
                await response.aclose()
                outgoing = response.next_request
        raise OutboundRequestFailed(
            f"{request.url} redirected more than {self.max_redirects} times", "too-many-redirects", transient=False
        )

    async def _exchange(self, client: httpx.AsyncClient, outgoing: httpx.Request) -> httpx.Response:
        try:
            return await client.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            raise OutboundRequestFailed(f"{outgoing.url}: timed out ({exc})", "timeout", transient=True) from None
        except httpx.ConnectError as exc:
            raise OutboundRequestFailed(
                f"{outgoing.url}: could not connect ({exc})", "connect", transient=True
            ) from None
        except httpx.HTTPError as exc:
            raise OutboundRequestFailed(f"{outgoing.url}: {exc}", "protocol", transient=True) from None

    async def _read(self, response: httpx.Response, limit: int) -> bytes:
        try:
            declared = int(response.headers.get("content-length", "0"))
            if declared > limit:
                raise _too_large(response, limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise _too_large(response, limit)
                chunks.append(chunk)
            return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise OutboundRequestFailed(f"{response.url}: {exc}", "protocol", transient=True) from None
        except ValueError:
            raise OutboundRequestFailed(
                f"{response.url}: malformed Content-Length", "protocol", transient=False
            ) from None
        finally:
            await response.aclose()


def _too_large(response: httpx.Response, limit: int) -> OutboundRequestFailed:
    return OutboundRequestFailed(f"{response.url}: response body exceeds {limit} bytes", "too-large", transient=False)
