"""SSRF through Send API Request, attacked the way a user would: real actions saved and
executed through the API (POST /api/v1/actions/{id}/execute/), the real egress guard and
the real httpx sender.

Nothing here may send a packet beyond 127.0.0.0/8 or ::1. A module-wide guard replaces
name resolution with a fixed table (unknown names fail without a lookup) and makes every
socket connect or sendto to a non-loopback address fail the test before the system call,
with an exception the app cannot swallow. Every refused case then also asserts that no
connection was attempted at all, and the loopback spellings point at a live echo server
that would record a request had one slipped through.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from django.contrib.auth.models import AbstractBaseUser

from secretsapp import services as secret_services
from secretsapp.models import AuditAction, AuditEvent
from tests.conftest import Personas, _EchoHandler, api_client_for, http_action

# --- The network guard ---------------------------------------------------------------------

# Public and private answers for names the tests use. A public address here is never
# connected to: every name that yields one also yields a forbidden one, and the guard
# below fails the test before any connect to it.
FAKE_DNS: dict[str, list[str]] = {
    "localhost": ["127.0.0.1", "::1"],
    "rebind.test": ["127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["93.184.215.14", "10.0.0.1"],
    "private-first.test": ["10.0.0.1", "93.184.215.14"],
    "ipv6-private.test": ["2606:4700:4700::1111", "fd00::1"],
}


class ForbiddenNetworkAccess(BaseException):
    """A BaseException, so that no ``except Exception``/``except OSError`` in the app or in
    httpx can turn an attempted escape into an ordinary failed step."""


@dataclass
class NetworkLog:
    connections: list[tuple[str, int]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    dns: dict[str, list[str] | Callable[[], list[str]]] = field(default_factory=dict)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkLog]:
    log = NetworkLog(dns=dict(FAKE_DNS))
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host, port = str(address[0]), int(address[1])
        if not _is_loopback(host):
            log.violations.append(f"{host}:{port}")
            raise ForbiddenNetworkAccess(f"attempted to reach {host}:{port} (not loopback)")
        log.connections.append((host, port))

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: bytes, *arguments: Any) -> int:
        check(self, arguments[-1])
        return real_sendto(self, data, *arguments)

    # socket.getaddrinfo's own signature: callers pass type= and proto= by keyword.
    def getaddrinfo(
        host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        text = host.decode() if isinstance(host, bytes) else str(host)
        if _numeric(text):
            # A numeric host never reaches DNS with AI_NUMERICHOST.
            return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        name = text.rstrip(".").lower()
        log.lookups.append(name)
        answer = log.dns.get(name)
        if callable(answer):
            answer = answer()
        if not answer:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test resolver)")
        results = []
        for address in answer:
            version = ipaddress.ip_address(address).version
            results.append(
                (
                    socket.AF_INET if version == 4 else socket.AF_INET6,
                    socket.SOCK_STREAM,
                    socket.IPPROTO_TCP,
                    "",
                    (address, int(port or 0)) if version == 4 else (address, int(port or 0), 0, 0),
                )
            )
        return results

    def no_lookup(host: str, *arguments: Any) -> Any:
        # Nothing in the sender uses these; a call would be a lookup the table cannot answer.
        raise ForbiddenNetworkAccess(f"unexpected gethostbyname({host!r})")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyname", no_lookup)
    monkeypatch.setattr(socket, "gethostbyname_ex", no_lookup)
    yield log
    assert log.violations == [], f"non-loopback network access attempted: {log.violations}"


def test_the_guard_itself_stops_a_connection_to_a_forbidden_address(network_guard: NetworkLog):
    # The safety net must work, or every "nothing connected" below proves nothing.
    with pytest.raises(ForbiddenNetworkAccess):
        socket.create_connection(("10.0.0.1", 80), timeout=0.1)
    assert network_guard.violations == ["10.0.0.1:80"]
    network_guard.violations.clear()
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("unknown.test", 80)


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    # A short poll interval: shutdown() waits for it, and the default (0.5 s) per test
    # would be most of this module's run time.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


@pytest.fixture(scope="module")
def shared_echo_server() -> Iterator[ThreadingHTTPServer]:
    server = _serve(_EchoHandler)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def echo_server(shared_echo_server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    """The conftest's echo server (same handler), started once for the module."""
    shared_echo_server.requests = []
    return shared_echo_server


# --- Helpers -----------------------------------------------------------------------------


@dataclass
class Executor:
    """Saves actions through the API and executes them through the API, as the runner."""

    actor: AbstractBaseUser
    workflow_id: int

    def save(self, config: dict[str, Any]) -> int:
        response = api_client_for(self.actor).post(
            "/api/v1/actions/",
            {
                "workflow": self.workflow_id,
                "name": "Call",
                "type": "send_api_request",
                "config": config,
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        return response.json()["id"]

    def execute(self, config: dict[str, Any], inputs: dict[str, Any] | None = None) -> dict:
        action_id = self.save(config)
        response = api_client_for(self.actor).post(
            f"/api/v1/actions/{action_id}/execute/", {"inputs": inputs or {}}, format="json"
        )
        assert response.status_code == 200, response.content
        return response.json()


@pytest.fixture
def executor(personas: Personas) -> Executor:
    response = api_client_for(personas.member_use).post(
        "/api/v1/workflows/", {"name": "Outbound", "inputs": ["value", "base"]}, format="json"
    )
    assert response.status_code == 201, response.content
    return Executor(personas.member_use, response.json()["id"])


def assert_refused(result: dict, reason: str, network_guard: NetworkLog) -> None:
    assert result["status"] == "failed", result
    assert result["error"].startswith("Refused:"), result["error"]
    assert reason in result["error"], result["error"]
    assert network_guard.connections == [], "a refused request must not even connect"


# --- Every spelling of a forbidden address -------------------------------------------------

# (URL, the reason the error must give). "{port}" is the live echo server's port: should a
# loopback spelling get through, the echo server records the request.
REFUSED_WITH_NOTHING_ALLOWED = [
    ("http://127.0.0.1:{port}/echo", "127.0.0.1 is a loopback address"),
    ("http://localhost:{port}/echo", "localhost resolves to 127.0.0.1, which is a loopback"),
    ("http://LocalHost.:{port}/echo", "resolves to 127.0.0.1, which is a loopback"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://10.255.255.254/", "a private address"),
    ("http://172.16.0.1/", "172.16.0.1 is a private address"),
    ("http://172.31.255.254/", "a private address"),
    ("http://192.168.0.1/", "192.168.0.1 is a private address"),
    ("http://192.168.255.254/", "a private address"),
    ("http://169.254.169.254/latest/meta-data/", "the cloud metadata service address"),
    ("http://169.254.170.2/v2/credentials", "the cloud metadata service address"),
    ("http://169.254.1.1/", "a link-local address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "the cloud metadata service address"),
    ("http://100.64.0.1/", "a shared address (carrier-grade NAT"),
    ("http://100.127.255.254/", "a shared address"),
    ("http://100.100.100.200/latest/meta-data/", "the cloud metadata service address"),
    ("http://0.0.0.0:{port}/echo", "0.0.0.0 is an unspecified address"),
    ("http://0:{port}/echo", "(0.0.0.0) is an unspecified address"),
    ("http://[::]:{port}/echo", ":: is an unspecified address"),
    ("http://[::1]:{port}/echo", "::1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]:{port}/echo", "(127.0.0.1) is a loopback address"),
    ("http://[0:0:0:0:0:ffff:7f00:1]:{port}/echo", "(127.0.0.1) is a loopback address"),
    ("http://[::ffff:10.0.0.1]/", "(10.0.0.1) is a private address"),
    ("http://[::ffff:a9fe:a9fe]/", "the cloud metadata service address"),
    # NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
    ("http://[64:ff9b::7f00:1]:{port}/echo", "embeds 127.0.0.1, a loopback address"),
    ("http://[64:ff9b::a00:1]/", "embeds 10.0.0.1, a private address"),
    ("http://[64:ff9b::a9fe:a9fe]/", "embeds 169.254.169.254, the cloud metadata"),
    ("http://[2002:7f00:1::]:{port}/echo", "embeds 127.0.0.1, a loopback address"),
    ("http://[2002:a00:1::1]/", "embeds 10.0.0.1, a private address"),
    ("http://[2002:a9fe:a9fe::]/", "embeds 169.254.169.254, the cloud metadata"),
    ("http://[::7f00:1]:{port}/echo", "IPv4-compatible address"),
    # Other spellings of 127.0.0.1 that getaddrinfo (inet_aton) accepts.
    ("http://2130706433:{port}/echo", "2130706433 (127.0.0.1) is a loopback address"),
    ("http://017700000001:{port}/echo", "017700000001 (127.0.0.1) is a loopback address"),
    ("http://0x7f000001:{port}/echo", "0x7f000001 (127.0.0.1) is a loopback address"),
    ("http://0x7f.0.0.1:{port}/echo", "0x7f.0.0.1 (127.0.0.1) is a loopback address"),
    ("http://127.1:{port}/echo", "127.1 (127.0.0.1) is a loopback address"),
    ("http://0177.1:{port}/echo", "0177.1 (127.0.0.1) is a loopback address"),
    ("http://127。0。0。1:{port}/echo", "127.0.0.1 is a loopback address"),
    # httpx itself refuses leading zeros in a dotted quad: the URL is not even valid.
    ("http://0177.0.0.1:{port}/echo", "the URL is not valid"),
    # Names.
    ("http://rebind.test:{port}/echo", "rebind.test resolves to 127.0.0.1, which is a loopback"),
    ("http://metadata.test/latest/meta-data/", "the cloud metadata service address"),
    ("http://mixed.test/", "mixed.test resolves to 10.0.0.1, which is a private address"),
    ("http://private-first.test/", "resolves to 10.0.0.1, which is a private address"),
    ("http://ipv6-private.test/", "resolves to fd00::1, which is a private address"),
    ("http://nowhere.test/", "could not resolve the host nowhere.test"),
    # Shapes that disguise the host.
    ("http://evil.test@127.0.0.1:{port}/echo", "user name or password"),
    ("http://127.0.0.1:{port}\\@evil.test/", "user name or password"),
    ("http://[fe80::1%25lo]:{port}/echo", "zone identifiers are not supported"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_WITH_NOTHING_ALLOWED)
def test_forbidden_address_is_a_failed_step_and_nothing_connects(
    executor: Executor, echo_server, network_guard: NetworkLog, settings, url: str, reason: str
):
    settings.EGRESS_ALLOWED_HOSTS = []
    port = echo_server.server_address[1]

    result = executor.execute(http_action(url.format(port=port)))

    assert_refused(result, reason, network_guard)
    assert result["output"] is None
    assert echo_server.requests == []
    assert "evil.test" not in network_guard.lookups


# Allowing 127.0.0.1 (as tests and local development do) allows that one address and nothing
# near it: not the rest of 127/8, not ::1, not an embedding of 127.0.0.1 the kernel would route
# elsewhere, not a name that also resolves to ::1.
REFUSED_WITH_LOOPBACK_ALLOWED = [
    ("http://127.0.0.2:{port}/echo", "127.0.0.2 is a loopback address"),
    ("http://[::1]:{port}/echo", "::1 is a loopback address"),
    ("http://localhost:{port}/echo", "localhost resolves to ::1, which is a loopback"),
    ("http://0.0.0.0:{port}/echo", "an unspecified address"),
    ("http://[::]:{port}/echo", "an unspecified address"),
    ("http://[64:ff9b::7f00:1]:{port}/echo", "embeds 127.0.0.1, a loopback address"),
    ("http://[2002:7f00:1::]:{port}/echo", "embeds 127.0.0.1, a loopback address"),
    ("http://[::7f00:1]:{port}/echo", "IPv4-compatible address"),
    ("http://10.0.0.1/", "a private address"),
    ("http://169.254.169.254/latest/meta-data/", "the cloud metadata service address"),
    ("http://[fd00:ec2::254]/", "the cloud metadata service address"),
    ("http://[::ffff:10.0.0.1]/", "a private address"),
    ("http://mixed.test/", "a private address"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_WITH_LOOPBACK_ALLOWED)
def test_allowing_127_0_0_1_allows_nothing_else(
    executor: Executor, echo_server, network_guard: NetworkLog, settings, url: str, reason: str
):
    settings.EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]

    result = executor.execute(http_action(url.format(port=echo_server.server_address[1])))

    assert_refused(result, reason, network_guard)
    assert echo_server.requests == []


def test_allowed_loopback_is_reached_so_the_refusals_are_not_a_broken_setup(
    executor: Executor, echo_server, network_guard: NetworkLog, settings
):
    # The counterpart of the tests above: the same execution path does connect when allowed.
    settings.EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    port = echo_server.server_address[1]

    result = executor.execute(http_action(f"http://127.0.0.1:{port}/echo"))

    assert result["status"] == "succeeded", result
    assert result["output"]["status_code"] == 200
    assert network_guard.connections == [("127.0.0.1", port)]
    assert len(echo_server.requests) == 1


def test_dns_rebinding_after_the_check_cannot_redirect_the_connection(
    executor: Executor, echo_server, network_guard: NetworkLog, settings
):
    # The first answer passes the guard; any later lookup would answer a private address.
    # The sender must connect to the checked address and never ask DNS again.
    settings.EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    answers = iter([["127.0.0.1"]])
    network_guard.dns["rebind-late.test"] = lambda: next(answers, ["10.0.0.1"])
    port = echo_server.server_address[1]

    result = executor.execute(http_action(f"http://rebind-late.test:{port}/echo"))

    assert result["status"] == "succeeded", result
    assert network_guard.lookups.count("rebind-late.test") == 1
    assert network_guard.connections == [("127.0.0.1", port)]
    # The name is kept for the Host header (virtual hosts), only the address is pinned.
    assert echo_server.requests[0]["headers"]["Host"] == f"rebind-late.test:{port}"


# --- Redirects from an allowed host to a forbidden one ---------------------------------------


class _RedirectHandler(BaseHTTPRequestHandler):
    """/<status>?<location> answers that redirect status with that Location, verbatim;
    /hostile/<media type> answers a body no database can store as is."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        self.server.requests.append({"method": self.command, "path": self.path, "body": body})
        if self.path.startswith("/hostile/"):
            self._hostile(self.path.removeprefix("/hostile/").replace("-", "/"))
            return
        status, _, location = self.path.lstrip("/").partition("?")
        self.send_response(int(status))
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _hostile(self, media_type: str) -> None:
        if media_type == "application/json":
            # JSON escapes of NUL and of a lone surrogate: valid JSON, unstorable text.
            payload = b'{"text": "a\\u0000b", "lone": "\\ud800", "key\\u0000": 1}'
        else:
            payload = b"raw\x00nul"
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def shared_redirect_server() -> Iterator[ThreadingHTTPServer]:
    server = _serve(_RedirectHandler)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def redirect_server(shared_redirect_server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    shared_redirect_server.requests = []
    return shared_redirect_server


REDIRECT_TARGETS = [
    ("http://169.254.169.254/latest/meta-data/", "the cloud metadata service address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "the cloud metadata service address"),
    ("http://2852039166/latest/meta-data/", "the cloud metadata service address"),
    ("http://metadata.test/latest/meta-data/", "the cloud metadata service address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "the cloud metadata service address"),
    ("http://127.0.0.2/", "127.0.0.2 is a loopback address"),
    ("file:///etc/passwd", "file:// is not supported"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "gopher:// is not supported"),
]


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize(("location", "reason"), REDIRECT_TARGETS)
def test_redirect_from_an_allowed_host_to_a_forbidden_one_is_refused(
    executor: Executor,
    redirect_server: ThreadingHTTPServer,
    network_guard: NetworkLog,
    settings,
    status: int,
    location: str,
    reason: str,
):
    settings.EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    config = http_action(
        f"{redirect_server.url}/{status}?{location}",
        method="POST",
        body={"type": "raw", "raw": '{"payload": "for the allowed host only"}'},
    )

    result = executor.execute(config)

    assert result["status"] == "failed", result
    assert reason in result["error"], result["error"]
    # Only the allowed first hop was contacted; the forbidden hop was refused before connecting.
    assert len(redirect_server.requests) == 1
    assert network_guard.connections == [("127.0.0.1", redirect_server.server_address[1])]


def test_a_redirect_chain_is_checked_at_every_hop(
    executor: Executor, redirect_server: ThreadingHTTPServer, network_guard: NetworkLog, settings
):
    settings.EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    port = redirect_server.server_address[1]
    # Allowed → allowed (307, same host) → metadata: only the third hop is forbidden.
    second_hop = f"http://127.0.0.1:{port}/307?http://169.254.169.254/latest/meta-data/iam/"

    result = executor.execute(http_action(f"{redirect_server.url}/302?{second_hop}"))

    assert result["status"] == "failed", result
    assert "the cloud metadata service address" in result["error"]
    assert len(redirect_server.requests) == 2
    assert network_guard.connections == [("127.0.0.1", port), ("127.0.0.1", port)]


def test_redirect_with_a_secret_in_the_body_does_not_carry_it_to_a_forbidden_host(
    personas: Personas,
    executor: Executor,
    redirect_server: ThreadingHTTPServer,
    network_guard: NetworkLog,
    settings,
):
    # A 307 repeats the method and the body: the forbidden host must not get the key.
    settings.EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    reference = f"{{{{secret:{personas.team_key.pk}}}}}"
    config = http_action(
        f"{redirect_server.url}/307?http://10.0.0.1/collect",
        method="POST",
        headers=[{"name": "Authorization", "value": f"Bearer {reference}"}],
        body={"type": "fields", "fields": [{"name": "token", "value": reference}]},
    )

    result = executor.execute(config)

    assert result["status"] == "failed"
    assert "10.0.0.1 is a private address" in result["error"]
    assert network_guard.connections == [("127.0.0.1", redirect_server.server_address[1])]


# --- Values that try to move the request somewhere else --------------------------------------

INJECTED_VALUES = [
    "@evil.test/",
    "/../../admin",
    "..%2F..%2Fadmin",
    "?redirect=http://evil.test/#",
    ":80@evil.test",
    "\\@evil.test",
    "#@evil.test",
    "evil.test%0d%0aHost:%20evil.test",
    "x\r\nHost: evil.test",
    " \t\u2028tail",
]


@pytest.mark.parametrize("value", INJECTED_VALUES)
def test_an_input_in_the_url_path_is_percent_encoded_and_keeps_the_host(
    executor: Executor, echo_server, network_guard: NetworkLog, value: str
):
    port = echo_server.server_address[1]

    result = executor.execute(
        http_action(f"{echo_server.url}/echo/{{{{inputs.value}}}}/end"), {"value": value}
    )

    assert result["status"] == "succeeded", result
    [received] = echo_server.requests
    assert received["path"] == f"/echo/{quote(value, safe='')}/end"
    assert received["query"] == ""
    assert received["headers"]["Host"] == f"127.0.0.1:{port}"
    assert network_guard.connections == [("127.0.0.1", port)]
    assert "evil.test" not in network_guard.lookups


@pytest.mark.parametrize("value", INJECTED_VALUES)
def test_an_input_in_the_query_stays_one_parameter(
    executor: Executor, echo_server, network_guard: NetworkLog, value: str
):
    port = echo_server.server_address[1]
    config = http_action(
        f"{echo_server.url}/echo?inline={{{{inputs.value}}}}",
        query=[{"name": "row", "value": "{{inputs.value}}"}],
    )

    result = executor.execute(config, {"value": value})

    assert result["status"] == "succeeded", result
    [received] = echo_server.requests
    assert received["path"] == "/echo"
    assert parse_qs(received["query"], keep_blank_values=True) == {
        "inline": [value],
        "row": [value],
    }
    assert network_guard.connections == [("127.0.0.1", port)]


@pytest.mark.parametrize("value", INJECTED_VALUES)
def test_a_secret_in_the_url_path_is_percent_encoded_and_keeps_the_host(
    personas: Personas, executor: Executor, echo_server, network_guard: NetworkLog, value: str
):
    secret_key = secret_services.create_secret_key(
        personas.admin, name="Injected", value=f"{value}-padding-for-redaction"
    )
    port = echo_server.server_address[1]

    result = executor.execute(http_action(f"{echo_server.url}/echo/{{{{secret:{secret_key.pk}}}}}"))

    assert result["status"] == "succeeded", result
    [received] = echo_server.requests
    assert received["path"] == "/echo/" + quote(secret_key.value, safe="")
    assert received["headers"]["Host"] == f"127.0.0.1:{port}"
    assert network_guard.connections == [("127.0.0.1", port)]


HEADER_BREAKERS = [
    "x\r\nHost: evil.test",
    "x\nX-Injected: 1",
    "x\rX-Injected: 1",
    "\r\n\r\nGET /admin HTTP/1.1",
]


@pytest.mark.parametrize("value", HEADER_BREAKERS)
def test_an_input_with_a_line_break_in_a_header_is_refused_before_connecting(
    executor: Executor, echo_server, network_guard: NetworkLog, value: str
):
    result = executor.execute(
        http_action(echo_server.url, headers=[{"name": "X-Value", "value": "{{inputs.value}}"}]),
        {"value": value},
    )

    assert result["status"] == "failed", result
    assert result["error"] == "config.headers[0].value: a header value cannot contain line breaks."
    assert echo_server.requests == []
    assert network_guard.connections == []


@pytest.mark.parametrize("value", HEADER_BREAKERS)
def test_a_secret_with_a_line_break_in_a_header_is_refused_without_showing_it(
    personas: Personas, executor: Executor, echo_server, network_guard: NetworkLog, value: str
):
    secret_key = secret_services.create_secret_key(
        personas.admin, name="Header injection", value=f"Bearer-{value}-padding"
    )

    result = executor.execute(
        http_action(
            echo_server.url,
            headers=[{"name": "Authorization", "value": f"{{{{secret:{secret_key.pk}}}}}"}],
        )
    )

    assert result["status"] == "failed", result
    # The refusal names the field, never the value.
    assert result["error"] == "config.headers[0].value: a header value cannot contain line breaks."
    assert echo_server.requests == []
    assert network_guard.connections == []


def test_a_header_value_without_line_breaks_arrives_as_one_header(
    executor: Executor, echo_server, network_guard: NetworkLog
):
    value = "a: b; Host= evil.test, X-Injected: 1"

    result = executor.execute(
        http_action(echo_server.url, headers=[{"name": "X-Value", "value": "{{inputs.value}}"}]),
        {"value": value},
    )

    assert result["status"] == "succeeded", result
    [received] = echo_server.requests
    assert received["headers"]["X-Value"] == value
    assert "X-Injected" not in received["headers"]
    assert received["headers"]["Host"] == f"127.0.0.1:{echo_server.server_address[1]}"


@pytest.mark.parametrize(
    ("base", "reason"),
    [
        ("http://10.0.0.1", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "the cloud metadata service address"),
        ("http://127.0.0.1:{port}@evil.test", "user name or password"),
        ("http://rebind.test:{port}", "rebind.test resolves to 127.0.0.1"),
        ("file:///etc/passwd#", "file:// is not supported"),
    ],
)
def test_a_base_url_from_an_input_goes_through_the_same_guard(
    executor: Executor,
    echo_server,
    network_guard: NetworkLog,
    settings,
    base: str,
    reason: str,
):
    # A URL that starts with a reference takes it as its base (a webhook URL kept as a key or
    # an input), unencoded: the guard is what stops it, so it must see the final URL.
    settings.EGRESS_ALLOWED_HOSTS = []
    port = echo_server.server_address[1]

    result = executor.execute(http_action("{{inputs.base}}/echo"), {"base": base.format(port=port)})

    assert_refused(result, reason, network_guard)
    assert echo_server.requests == []
    assert "evil.test" not in network_guard.lookups


# --- A hostile allowed host -------------------------------------------------------------------


@pytest.mark.parametrize("media_type", ["application-json", "text-plain"])
def test_an_unstorable_response_cannot_keep_the_key_use_off_the_record(
    personas: Personas,
    executor: Executor,
    redirect_server: ThreadingHTTPServer,
    settings,
    media_type: str,
):
    # The key has left with the request; a response PostgreSQL cannot store (NUL) or no
    # database can (a lone surrogate) must not make the run, and so its "used" audit
    # event, vanish in a 500.
    settings.EGRESS_ALLOWED_HOSTS = ["127.0.0.1"]
    key = personas.team_key
    config = http_action(
        f"{redirect_server.url}/hostile/{media_type}",
        headers=[{"name": "Authorization", "value": f"Bearer {{{{secret:{key.pk}}}}}"}],
    )

    result = executor.execute(config)

    assert result["status"] == "succeeded", result
    assert redirect_server.requests[0]["path"] == f"/hostile/{media_type}"
    run = api_client_for(executor.actor).get(f"/api/v1/runs/{result['run_id']}/").json()
    assert run["steps"][0]["output"] == result["output"]
    used = AuditEvent.objects.filter(secret_key_id=key.pk, action=AuditAction.USED)
    assert [event.changes["run_id"] for event in used] == [result["run_id"]]
    # Replaced visibly rather than dropped.
    assert "\ufffd" in json.dumps(result["output"], ensure_ascii=False)
