"""The egress guard of Send API Request: which URLs an action may reach.

A URL passes when its scheme is http or https and every address its host resolves to is
globally routable, unless EGRESS_ALLOWED_HOSTS allows it. The checked address is returned
so that the sender connects to exactly that address: a second DNS lookup could answer
differently (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOW_HINT = "Allow it with EGRESS_ALLOWED_HOSTS."

# Instance metadata services hand out cloud credentials: name them so the refusal is obvious.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)

# Checked in order, so the first match gives the most specific reason.
FORBIDDEN_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "an unspecified address"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("169.254.0.0/16", "a link-local address"),
        ("100.64.0.0/10", "a shared address (carrier-grade NAT, 100.64.0.0/10)"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("fc00::/7", "a private address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
        ("::/96", "an IPv4-compatible address (deprecated)"),
    )
)
NAT64_NETWORK = ipaddress.IPv6Network("64:ff9b::/96")


class EgressRefused(Exception):
    """The URL may not be requested; the message says why, in words a user understands."""


@dataclass(frozen=True)
class ResolvedTarget:
    url: httpx.URL  # as parsed, with the host name (used for Host, SNI and redirects)
    scheme: str
    host: str  # ASCII (IDNA) host name; for an IP literal, the address it stands for
    port: int
    address: IPAddress  # the checked address to connect to
    addresses: tuple[IPAddress, ...]  # every address the host resolved to, all checked
    is_ip_literal: bool

    @property
    def connect_url(self) -> httpx.URL:
        """The URL with the host replaced by the checked address, so no second lookup
        happens when connecting."""
        return self.url.copy_with(host=str(self.address), port=self.port)

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def sni_hostname(self) -> str | None:
        """The name TLS must verify the certificate against (None for an IP literal, which
        is verified against the address itself)."""
        if self.scheme != "https" or self.is_ip_literal:
            return None
        return self.host


def resolve_and_check(
    url: str,
    *,
    allowed: list[str] | None = None,
    resolver: Resolver | None = None,
) -> ResolvedTarget:
    """Parse ``url``, resolve its host and refuse it unless every address may be reached.

    ``allowed`` defaults to settings.EGRESS_ALLOWED_HOSTS; ``resolver`` to getaddrinfo.
    Raises EgressRefused.
    """
    parsed = parse_url(url)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = _resolve(host, port, resolver or system_resolver)
    allow_list = AllowList.from_entries(
        settings.EGRESS_ALLOWED_HOSTS if allowed is None else allowed
    )
    if not allow_list.allows_host(parsed):
        for address in addresses:
            _check_address(host, address, allow_list, is_ip_literal=literal is not None)
    return ResolvedTarget(
        url=parsed,
        scheme=parsed.scheme,
        host=str(literal) if literal is not None else host,
        port=port,
        address=addresses[0],
        addresses=tuple(addresses),
        is_ip_literal=literal is not None,
    )


def system_resolver(host: str, port: int) -> list[str]:
    """Every address getaddrinfo gives for ``host`` (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def refusal_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be reached, or None when it is globally routable."""
    address = canonical(address)
    if address in METADATA_ADDRESSES:
        return "the cloud metadata service address"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        # NAT64 and 6to4 reach the embedded IPv4 address: judge that one instead.
        inner_reason = refusal_reason(embedded)
        if inner_reason is None:
            return None
        return f"an address that embeds {embedded}, {inner_reason}"
    for network, reason in FORBIDDEN_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a globally routable address"
    return None


def canonical(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it maps."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class AllowList:
    host_names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> AllowList:
        host_names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().lower()
            if not text:
                continue
            network = _network_or_none(text.removeprefix("[").removesuffix("]"))
            if network is None:
                host_names.add(text.rstrip("."))
            else:
                networks.append(network)
        return cls(frozenset(host_names), tuple(networks))

    def allows_host(self, url: httpx.URL) -> bool:
        # Either spelling of an internationalised name may be listed.
        names = {url.host.lower().rstrip("."), url.raw_host.decode("ascii").rstrip(".")}
        return bool(names & self.host_names)

    def allows_address(self, address: IPAddress) -> bool:
        address = canonical(address)
        return any(
            address.version == network.version and address in network for network in self.networks
        )


def parse_url(url: str) -> httpx.URL:
    """The URL parsed, or EgressRefused saying why it cannot be sent to: the one parser of
    action URLs (the first, each redirect's, and the first with its query rows merged)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        # The kind of error only: httpx quotes the offending part ("Invalid port: '…'"),
        # and a URL kept as a key puts any part of the value there, which redaction (of
        # whole values) would not catch.
        reason = str(error).split(":", 1)[0]
        raise EgressRefused(f"Refused: the URL is not valid ({reason}).") from None
    if parsed.scheme not in DEFAULT_PORTS:
        shown = f"{parsed.scheme}://" if parsed.scheme else "a URL without a scheme"
        raise EgressRefused(f"Refused: {shown} is not supported; use http:// or https://.")
    if parsed.userinfo:
        # Credentials in the URL would be sent to every host a redirect leads to, and
        # user@host URLs are a classic way to disguise the real host.
        raise EgressRefused(
            "Refused: the URL contains a user name or password; "
            "send credentials in an Authorization header instead."
        )
    if not parsed.raw_host:
        raise EgressRefused("Refused: the URL has no host.")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise EgressRefused(f"Refused: port {parsed.port} is not a valid port.")
    return parsed


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host written as an IP address stands for, in any spelling that
    getaddrinfo would accept (127.1, 2130706433, 0x7f.0.0.1, 017700000001, ...)."""
    if ":" in host:
        if "%" in host:
            raise EgressRefused("Refused: IPv6 zone identifiers are not supported.")
        try:
            return canonical(ipaddress.IPv6Address(host))
        except ValueError:
            raise EgressRefused(f"Refused: {host} is not a valid IPv6 address.") from None
    try:
        # inet_aton is the parser getaddrinfo itself uses for numeric IPv4 hosts.
        packed = socket.inet_aton(host)
    except (OSError, ValueError):
        return None
    return ipaddress.IPv4Address(packed)


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        answers = resolver(host, port)
    except (OSError, UnicodeError):
        answers = []
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = canonical(ipaddress.ip_address(answer))
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise EgressRefused(f"Refused: could not resolve the host {host}.")
    return addresses


def _check_address(
    host: str, address: IPAddress, allow_list: AllowList, *, is_ip_literal: bool
) -> None:
    if allow_list.allows_address(address):
        return
    reason = refusal_reason(address)
    if reason is None:
        return
    if host == str(address):
        subject = host
    elif is_ip_literal:
        subject = f"{host} ({address})"
    else:
        subject = f"{host} resolves to {address}, which"
    raise EgressRefused(f"Refused: {subject} is {reason}. {ALLOW_HINT}")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in NAT64_NETWORK:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _network_or_none(text: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
