"""The egress policy: which destinations outbound HTTP may reach. Pure: no DNS, no sockets.

Outbound requests (the ``http`` step, agent tools) go only to ``http``/``https`` on ports 80
and 443, and only to globally routable addresses. Every address a name resolves to is
checked, not just the first: a name that resolves to a public and a private address is
refused. Cloud metadata endpoints (``169.254.169.254``, ``metadata.google.internal``, ...)
are refused even when an allow-list entry covers them.

Internal services are reached through an explicit allow-list: host names (exact, or
``*.suffix``), networks (CIDR) and extra ports. An allow-listed host may resolve to any
address that is not a metadata endpoint.

The HTTP adapter (:mod:`engine.adapters.http_guarded`) applies this policy when it opens
each connection, to the very address it then connects to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.errors import EgressDenied

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = frozenset({80, 443})

#: Names of cloud instance-metadata services (GCP, AWS, Azure/OpenStack aliases).
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
#: Their addresses: GCP/AWS/Azure, AWS IPv6, ECS task metadata, Alibaba Cloud.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)

# The legacy IPv4 spellings resolvers accept: 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


def parse_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one in any spelling a resolver accepts, else ``None``.

    Besides the standard forms (``127.0.0.1``, ``[::1]``, ``::ffff:127.0.0.1``) this reads
    the decimal, hex, octal and shortened IPv4 forms that ``inet_aton`` accepts, so
    ``http://2130706433/`` is recognised as loopback without asking DNS.
    """
    text = host.strip().strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if not _LEGACY_IPV4.match(text):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def unmap(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or 6to4 IPv6 address; otherwise ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return embedded
    return address


def classify(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination (``loopback``, ``private``, ...), or ``None``."""
    if address in METADATA_ADDRESSES:
        return "metadata"
    inner = unmap(address)
    if inner in METADATA_ADDRESSES:
        return "metadata"
    for reason, flag in (
        ("unspecified", inner.is_unspecified),
        ("loopback", inner.is_loopback),
        ("link-local", inner.is_link_local),
        ("private", inner.is_private),
        ("multicast", inner.is_multicast),
        ("reserved", inner.is_reserved),
    ):
        if flag:
            return reason
    if not inner.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """What outbound HTTP may reach; see the module docstring for the rules."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_ports: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_lists(
        cls, hosts: Iterable[str] = (), cidrs: Iterable[str] = (), ports: Iterable[int] = ()
    ) -> EgressPolicy:
        """Build from settings; a malformed CIDR raises ``ValueError`` naming it."""
        networks = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError as exc:
                raise ValueError(f"http allow-list: {cidr!r} is not a network: {exc}") from None
        return cls(frozenset(h.strip().lower().rstrip(".") for h in hosts), tuple(networks), frozenset(ports))

    def host_allowed(self, host: str) -> bool:
        """Whether ``host`` is on the allow-list, exactly or under a ``*.suffix`` entry."""
        name = host.lower().rstrip(".")
        return name in self.allow_hosts or any(
            entry.startswith("*.") and name.endswith(entry[1:]) for entry in self.allow_hosts
        )

    def check_target(self, scheme: str, host: str, port: int) -> None:
        """Refuse a URL's scheme, port or host name before anything is resolved."""
        if scheme not in SCHEMES:
            raise EgressDenied(f"scheme {scheme!r} is not allowed; only http and https are", "scheme")
        if not host:
            raise EgressDenied("the URL has no host", "host")
        self.check_port(host, port)
        name = host.lower().rstrip(".")
        if name in METADATA_HOSTS or name.endswith(".metadata.google.internal"):
            raise EgressDenied(f"{host} is a cloud metadata endpoint", "metadata")
        literal = parse_address(host)
        if literal is not None:
            self.check_address(host, literal)

    def check_port(self, host: str, port: int) -> None:
        if port not in DEFAULT_PORTS and port not in self.allow_ports:
            raise EgressDenied(f"port {port} of {host} is not allowed; only 80, 443 and allow-listed ports are", "port")

    def check_address(self, host: str, address: IPAddress) -> None:
        """Refuse ``address`` (which ``host`` resolved to) unless it is public or allow-listed."""
        reason = classify(address)
        if reason is None:
            return
        if reason != "metadata" and (
            self.host_allowed(host) or any(unmap(address) in net or address in net for net in self.allow_networks)
        ):
            return
        shown = host if str(address) == host.strip("[]") else f"{host} ({address})"
        raise EgressDenied(f"{shown} is a {reason} address", reason)

    def vet(self, host: str, port: int, addresses: Sequence[IPAddress]) -> None:
        """Check the port and every address ``host`` resolved to; one refused address refuses all."""
        self.check_port(host, port)
        if not addresses:
            raise EgressDenied(f"{host} did not resolve to any address", "unresolved")
        for address in addresses:
            self.check_address(host, address)
