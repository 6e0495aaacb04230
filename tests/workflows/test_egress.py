"""The egress guard decides without connecting anywhere: names resolve through a fake
resolver, and IP literals must be decided without any lookup at all."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from workflows.egress import EgressRefused, resolve_and_check

FAKE_DNS = {
    "localhost": ["127.0.0.1", "::1"],
    "rebind.example": ["127.0.0.1"],
    "mixed.example": ["93.184.215.14", "10.1.2.3"],
    "public.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "metadata.example": ["169.254.169.254"],
    "internal.example": ["10.20.30.40"],
    "other-internal.example": ["10.99.0.1"],
    "nothing.example": [],
}


def fake_resolver(host: str, port: int) -> list[str]:
    if host not in FAKE_DNS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return FAKE_DNS[host]


def no_lookup(host: str, port: int) -> list[str]:
    pytest.fail(f"an IP literal must be decided without a DNS lookup (asked for {host!r})")


REFUSED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://10.0.0.1/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://100.64.0.1/", "shared address"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[0:0:0:0:0:ffff:7f00:1]/", "loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[::ffff:169.254.169.254]/", "metadata"),
    ("http://[64:ff9b::a00:1]/", "embeds 10.0.0.1, a private address"),
    ("http://[64:ff9b::7f00:1]/", "embeds 127.0.0.1, a loopback address"),
    ("http://[2002:0a00:0001::]/", "embeds 10.0.0.1, a private address"),
    ("http://[2002:a9fe:a9fe::1]/", "embeds 169.254.169.254, the cloud metadata"),
    ("http://[::7f00:1]/", "IPv4-compatible"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://192.0.2.10/", "not a globally routable address"),
    ("http://198.18.0.1/", "not a globally routable address"),
    # Other spellings of 127.0.0.1.
    ("http://2130706433/", "2130706433 (127.0.0.1) is a loopback"),
    ("http://017700000001/", "(127.0.0.1) is a loopback"),
    ("http://0x7f.0.0.1/", "(127.0.0.1) is a loopback"),
    ("http://0x7f000001/", "(127.0.0.1) is a loopback"),
    ("http://0177.1/", "(127.0.0.1) is a loopback"),
    ("http://127.1/", "(127.0.0.1) is a loopback"),
    ("http://0/", "(0.0.0.0) is an unspecified"),
    # httpx refuses leading zeros in a dotted quad: the URL cannot even be sent.
    ("http://0177.0.0.1/", "not valid"),
    # Names.
    ("http://rebind.example/", "rebind.example resolves to 127.0.0.1, which is a loopback"),
    ("http://REBIND.example:8080/path", "loopback"),
    ("https://mixed.example/", "mixed.example resolves to 10.1.2.3, which is a private"),
    ("http://metadata.example/", "metadata"),
    ("http://nothing.example/", "could not resolve"),
    ("http://unknown.example/", "could not resolve"),
    # Schemes and URL shapes.
    ("ftp://public.example/", "ftp:// is not supported"),
    ("file:///etc/passwd", "file:// is not supported"),
    ("gopher://public.example/", "not supported"),
    ("//public.example/", "without a scheme"),
    ("http:///path", "no host"),
    ("http://user:password@public.example/", "user name or password"),
    ("http://public.example\\@127.0.0.1/", "user name or password"),
    ("http://public.example:99999/", "not a valid port"),
    ("http://[fe80::1%25eth0]/", "zone"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_urls_name_the_reason(url: str, reason: str) -> None:
    with pytest.raises(EgressRefused) as refusal:
        resolve_and_check(url, allowed=[], resolver=fake_resolver)
    message = str(refusal.value)
    assert message.startswith("Refused: ")
    assert reason in message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",
        "http://017700000001/",
        "http://0x7f.0.0.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        "http://10.0.0.1/",
    ],
)
def test_ip_literals_are_refused_without_a_lookup(url: str) -> None:
    with pytest.raises(EgressRefused):
        resolve_and_check(url, allowed=[], resolver=no_lookup)


def test_private_address_refusal_says_how_to_allow_it() -> None:
    with pytest.raises(EgressRefused) as refusal:
        resolve_and_check("http://10.0.0.5/", allowed=[], resolver=no_lookup)
    assert str(refusal.value) == (
        "Refused: 10.0.0.5 is a private address. Allow it with EGRESS_ALLOWED_HOSTS."
    )


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://8.8.8.8/", "8.8.8.8"),
        ("https://93.184.215.14:8443/x?y=1", "93.184.215.14"),
        ("https://public.example/", "93.184.215.14"),
        ("http://[2606:4700:4700::1111]/", "2606:4700:4700::1111"),
        ("http://[::ffff:8.8.8.8]/", "8.8.8.8"),
        # NAT64 and 6to4 addresses of public IPv4 addresses are public.
        ("http://[64:ff9b::808:808]/", "64:ff9b::808:808"),
        ("http://[2002:808:808::1]/", "2002:808:808::1"),
    ],
)
def test_public_addresses_are_allowed(url: str, address: str) -> None:
    # A decision only: nothing here connects.
    target = resolve_and_check(url, allowed=[], resolver=fake_resolver)
    assert target.address == ipaddress.ip_address(address)


def test_target_carries_what_the_sender_needs() -> None:
    target = resolve_and_check(
        "https://Public.Example:8443/v1/items?page=2", allowed=[], resolver=fake_resolver
    )
    assert target.scheme == "https"
    assert target.host == "public.example"
    assert target.port == 8443
    assert target.addresses == (
        ipaddress.ip_address("93.184.215.14"),
        ipaddress.ip_address("2606:2800:21f:cb07:6820:80da:af6b:8b2c"),
    )
    assert str(target.connect_url) == "https://93.184.215.14:8443/v1/items?page=2"
    assert target.host_header == "public.example:8443"
    assert target.sni_hostname == "public.example"


def test_ip_literal_target_has_no_sni_name() -> None:
    target = resolve_and_check("https://8.8.8.8/", allowed=[], resolver=no_lookup)
    assert target.sni_hostname is None
    assert target.port == 443


def test_ipv6_target_connects_to_bracketed_address() -> None:
    target = resolve_and_check("http://[2606:4700:4700::1111]:81/a", allowed=[], resolver=no_lookup)
    assert str(target.connect_url) == "http://[2606:4700:4700::1111]:81/a"


def test_default_allow_list_from_settings_allows_127_0_0_1() -> None:
    target = resolve_and_check("http://127.0.0.1:8000/hook", resolver=no_lookup)
    assert target.address == ipaddress.ip_address("127.0.0.1")


def test_default_allow_list_still_refuses_other_private_addresses() -> None:
    with pytest.raises(EgressRefused, match="private"):
        resolve_and_check("http://10.0.0.1/", resolver=no_lookup)
    with pytest.raises(EgressRefused, match="loopback"):
        resolve_and_check("http://127.0.0.2/", resolver=no_lookup)


def test_empty_setting_refuses_127_0_0_1(settings) -> None:
    settings.EGRESS_ALLOWED_HOSTS = []
    with pytest.raises(EgressRefused, match="loopback"):
        resolve_and_check("http://127.0.0.1/", resolver=no_lookup)


def test_host_name_entry_allows_the_host_whatever_it_resolves_to() -> None:
    target = resolve_and_check(
        "http://Internal.Example/", allowed=["internal.example"], resolver=fake_resolver
    )
    assert target.address == ipaddress.ip_address("10.20.30.40")


def test_host_name_entry_does_not_allow_other_hosts() -> None:
    with pytest.raises(EgressRefused, match="private"):
        resolve_and_check(
            "http://other-internal.example/", allowed=["internal.example"], resolver=fake_resolver
        )


def test_host_name_entry_does_not_allow_the_address_under_another_name() -> None:
    with pytest.raises(EgressRefused, match="private"):
        resolve_and_check("http://10.20.30.40/", allowed=["internal.example"], resolver=no_lookup)


def test_ip_entry_allows_only_that_address() -> None:
    allowed = ["10.20.30.40"]
    target = resolve_and_check("http://internal.example/", allowed=allowed, resolver=fake_resolver)
    assert target.address == ipaddress.ip_address("10.20.30.40")
    for url in ("http://10.20.30.41/", "http://10.0.0.1/", "http://127.0.0.1/"):
        with pytest.raises(EgressRefused):
            resolve_and_check(url, allowed=allowed, resolver=no_lookup)


def test_ip_entry_does_not_allow_a_host_that_also_resolves_elsewhere() -> None:
    FAKE_DNS_WITH_EXTRA = {"two.example": ["10.20.30.40", "10.20.30.41"]}

    def resolver(host: str, port: int) -> list[str]:
        return FAKE_DNS_WITH_EXTRA[host]

    with pytest.raises(EgressRefused, match="10.20.30.41"):
        resolve_and_check("http://two.example/", allowed=["10.20.30.40"], resolver=resolver)


def test_cidr_entry_allows_addresses_inside_it_only() -> None:
    allowed = ["10.20.0.0/16"]
    resolve_and_check("http://10.20.255.1/", allowed=allowed, resolver=no_lookup)
    resolve_and_check("http://internal.example/", allowed=allowed, resolver=fake_resolver)
    with pytest.raises(EgressRefused, match="private"):
        resolve_and_check("http://10.21.0.1/", allowed=allowed, resolver=no_lookup)
    with pytest.raises(EgressRefused, match="private"):
        resolve_and_check("http://other-internal.example/", allowed=allowed, resolver=fake_resolver)


def test_ipv6_entries_match_with_or_without_brackets() -> None:
    for entry in ("::1", "[::1]", "::1/128"):
        resolve_and_check("http://[::1]:8000/", allowed=[entry], resolver=no_lookup)


def test_ip_entry_matches_the_ipv4_mapped_spelling() -> None:
    resolve_and_check("http://[::ffff:127.0.0.1]/", allowed=["127.0.0.1"], resolver=no_lookup)


def test_allow_list_does_not_lift_the_scheme_rule() -> None:
    with pytest.raises(EgressRefused, match="not supported"):
        resolve_and_check("ftp://127.0.0.1/", allowed=["127.0.0.1"], resolver=no_lookup)


def test_allowed_host_that_resolves_to_nothing_is_refused() -> None:
    with pytest.raises(EgressRefused, match="could not resolve"):
        resolve_and_check(
            "http://nothing.example/", allowed=["nothing.example"], resolver=fake_resolver
        )


def test_default_resolver_handles_localhost_without_network() -> None:
    # getaddrinfo answers "localhost" from the hosts file; it must be refused as loopback.
    with pytest.raises(EgressRefused, match="loopback"):
        resolve_and_check("http://localhost/", allowed=[])
