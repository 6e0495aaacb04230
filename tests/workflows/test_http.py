"""Send API Request's sender against real servers on 127.0.0.1 that the tests start.

Nothing here may reach another address: every test runs behind a guard on
socket.create_connection, and most also send through a transport that fails the test
if a request is addressed to anything but a loopback IP (which also proves the sender
connects to the checked address, never to a name it would look up again).
"""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workflows import http as http_module
from workflows.egress import EgressRefused
from workflows.http import HttpActionError, send_request

SECRET = "s3cr3t-token-never-in-messages"


# --- The test server ----------------------------------------------------------------------


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # A client that gave up (timeout tests) makes the handler's write fail: expected.
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without this, a kept-alive connection waits for
    # the client's delayed ACK (40 ms) before the body leaves.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_any(self) -> None:
        url = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        route = url.path.split("/")[1]
        getattr(self, f"route_{route.replace('-', '_')}", self.route_echo)(url, query, body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_any

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers or []:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def route_echo(self, url, query, body: bytes) -> None:
        echoed = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": [[name, value] for name, value in self.headers.items()],
            "body": body.decode("utf-8"),
        }
        self.respond(200, json.dumps(echoed).encode())

    def route_peer(self, url, query, body: bytes) -> None:
        self.respond(200, json.dumps({"port": self.client_address[1]}).encode())

    def route_status(self, url, query, body: bytes) -> None:
        status = int(url.path.split("/")[2])
        self.respond(status, f"status {status}".encode(), "text/plain")

    def route_text(self, url, query, body: bytes) -> None:
        self.respond(200, "café".encode("iso-8859-1"), "text/plain; charset=iso-8859-1")

    def route_problem(self, url, query, body: bytes) -> None:
        self.respond(422, b'{"title": "invalid"}', "application/problem+json")

    def route_bad_json(self, url, query, body: bytes) -> None:
        self.respond(200, b'{"not": json', "application/json")

    def route_nan_json(self, url, query, body: bytes) -> None:
        self.respond(200, b'{"value": NaN}', "application/json")

    def route_cookies(self, url, query, body: bytes) -> None:
        headers = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Request-ID", "abc")]
        self.respond(200, b"ok", "text/plain", headers)

    def route_big(self, url, query, body: bytes) -> None:
        self.respond(200, b"a" * int(query["size"]), "text/plain")

    def route_stream(self, url, query, body: bytes) -> None:
        # No Content-Length: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        remaining = int(query["size"])
        while remaining > 0:
            chunk = min(remaining, 1024)
            self.wfile.write(b"b" * chunk)
            remaining -= chunk
        self.close_connection = True

    def route_gzip(self, url, query, body: bytes) -> None:
        payload = b"0" * int(query.get("size", 0)) or b'{"compressed": true}'
        self.respond(
            200, gzip.compress(payload), "application/json", [("Content-Encoding", "gzip")]
        )

    def route_slow(self, url, query, body: bytes) -> None:
        time.sleep(float(query["seconds"]))
        self.respond(200, b"late", "text/plain")

    def route_redirect(self, url, query, body: bytes) -> None:
        self.respond(int(query["status"]), b"", "text/plain", [("Location", query["to"])])

    def route_loop(self, url, query, body: bytes) -> None:
        self.respond(302, b"", "text/plain", [("Location", "/loop")])


def start_server(ssl_context: ssl.SSLContext | None = None) -> QuietServer:
    server = QuietServer(("127.0.0.1", 0), Handler)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server() -> Iterator[QuietServer]:
    server = start_server()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server_url(server: QuietServer) -> str:
    return f"http://127.0.0.1:{server.server_port}"


# --- Guards: nothing may leave 127.0.0.0/8 -----------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    real_create_connection = socket.create_connection

    def create_connection(address, *args, **kwargs):
        host = address[0]
        try:
            is_loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            is_loopback = False
        if not is_loopback:
            pytest.fail(f"attempted a connection to {host!r}: only loopback addresses allowed")
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)


class LoopbackTransport(httpx.BaseTransport):
    """Sends to loopback IP addresses only, and remembers every request it sent."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            is_loopback = ipaddress.ip_address(request.url.host).is_loopback
        except ValueError:
            is_loopback = False
        if not is_loopback:
            pytest.fail(f"a request was addressed to {request.url.host!r}, not a loopback IP")
        self.requests.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class NoConnectionTransport(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail("no request should have been sent")


@pytest.fixture
def transport() -> LoopbackTransport:
    return LoopbackTransport()


TEST_DNS = {"api.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]}


def test_resolver(host: str, port: int) -> list[str]:
    if host not in TEST_DNS:
        pytest.fail(f"unexpected DNS lookup for {host!r}")
    return TEST_DNS[host]


test_resolver.__test__ = False  # a helper, not a test


def send(method: str, url: str, transport: httpx.BaseTransport | None, **options):
    options.setdefault("headers", [])
    options.setdefault("content", None)
    options.setdefault("resolver", test_resolver)
    return send_request(method, url, transport=transport, **options)


def received_headers(echoed: dict) -> dict[str, str]:
    return {name.lower(): value for name, value in echoed["headers"]}


# --- Round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_each_method_reaches_the_server_as_sent(server_url, transport, method: str) -> None:
    output = send(
        method,
        f"{server_url}/echo/items?page=2&q=a%20b",
        transport,
        headers=[("Content-Type", "application/json"), ("X-Custom", "yes")],
        content=b'{"name": "widget"}',
    )
    assert output["status_code"] == 200
    echoed = output["body"]
    assert echoed["method"] == method
    assert echoed["path"] == "/echo/items"
    assert echoed["query"] == "page=2&q=a%20b"
    assert echoed["body"] == '{"name": "widget"}'
    headers = received_headers(echoed)
    assert headers["x-custom"] == "yes"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == server_url.removeprefix("http://")


def test_method_is_case_insensitive(server_url, transport) -> None:
    assert send("post", f"{server_url}/echo", transport)["body"]["method"] == "POST"


def test_unsupported_method_is_refused_before_connecting(server_url) -> None:
    with pytest.raises(HttpActionError, match="TRACE"):
        send("TRACE", f"{server_url}/echo", NoConnectionTransport())


def test_header_values_may_be_utf8(server_url, transport) -> None:
    output = send("GET", f"{server_url}/echo", transport, headers=[("X-Name", "Zoë")])
    # http.server decodes header bytes as latin-1.
    assert received_headers(output["body"])["x-name"] == "Zoë".encode().decode("latin-1")


# --- Response parsing ---------------------------------------------------------------------


def test_json_response_is_parsed(server_url, transport) -> None:
    output = send("GET", f"{server_url}/echo", transport)
    assert isinstance(output["body"], dict)
    assert output["headers"]["content-type"] == "application/json"


def test_plus_json_response_is_parsed(server_url, transport) -> None:
    output = send("GET", f"{server_url}/problem", transport)
    assert output == {
        "status_code": 422,
        "headers": output["headers"],
        "body": {"title": "invalid"},
    }


def test_invalid_json_is_returned_as_text(server_url, transport) -> None:
    assert send("GET", f"{server_url}/bad-json", transport)["body"] == '{"not": json'


def test_json_with_nan_is_returned_as_text(server_url, transport) -> None:
    assert send("GET", f"{server_url}/nan-json", transport)["body"] == '{"value": NaN}'


def test_text_is_decoded_with_the_response_charset(server_url, transport) -> None:
    assert send("GET", f"{server_url}/text", transport)["body"] == "café"


def test_response_headers_are_lower_case_and_repeated_ones_joined(server_url, transport) -> None:
    headers = send("GET", f"{server_url}/cookies", transport)["headers"]
    assert headers["set-cookie"] == "a=1, b=2"
    assert headers["x-request-id"] == "abc"
    assert all(name == name.lower() for name in headers)


def test_gzip_response_is_decoded(server_url, transport) -> None:
    output = send("GET", f"{server_url}/gzip", transport)
    assert output["body"] == {"compressed": True}


@pytest.mark.parametrize("status", [404, 500])
def test_error_statuses_are_results(server_url, transport, status: int) -> None:
    output = send("GET", f"{server_url}/status/{status}", transport)
    assert output["status_code"] == status
    assert output["body"] == f"status {status}"


# --- Limits and failures ------------------------------------------------------------------


def test_body_at_the_size_limit_is_read(server_url, transport, settings) -> None:
    settings.HTTP_ACTION_MAX_RESPONSE_BYTES = 1000
    assert send("GET", f"{server_url}/big?size=1000", transport)["body"] == "a" * 1000


@pytest.mark.parametrize("path", ["/big?size=5000", "/stream?size=50000", "/gzip?size=1000000"])
def test_body_over_the_size_limit_is_an_error(server_url, transport, settings, path: str) -> None:
    settings.HTTP_ACTION_MAX_RESPONSE_BYTES = 2000
    with pytest.raises(HttpActionError, match="larger than 2000 bytes"):
        send("GET", f"{server_url}{path}", transport)


def test_read_timeout_is_an_error_and_returns_fast(server_url, transport, settings) -> None:
    settings.HTTP_ACTION_READ_TIMEOUT = 0.2
    started = time.monotonic()
    with pytest.raises(HttpActionError, match="Timed out waiting for 127.0.0.1:"):
        send("GET", f"{server_url}/slow?seconds=1.5", transport)
    assert time.monotonic() - started < 1.0


def test_connection_refused_is_an_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(HttpActionError, match=f"Could not connect to 127.0.0.1:{closed_port}"):
        send("GET", f"http://127.0.0.1:{closed_port}/", LoopbackTransport())


def test_errors_do_not_quote_headers_or_body(transport) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(HttpActionError) as failure:
        send(
            "POST",
            f"http://127.0.0.1:{closed_port}/",
            transport,
            headers=[("Authorization", f"Bearer {SECRET}")],
            content=SECRET.encode(),
        )
    assert SECRET not in str(failure.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Token", f"{SECRET}\r\nX-Injected: 1"),
        ("X-Token", f"{SECRET}\nX-Injected: 1"),
        ("X-Token", f"{SECRET}\rX-Injected: 1"),
        ("X-Token", f"{SECRET}\x00"),
        ("X-Token\r\nX-Injected", "1"),
        ("X Token", "1"),
        ("X-Token:", "1"),
        ("", "1"),
    ],
)
def test_header_with_line_break_or_bad_name_is_refused_before_connecting(
    server_url, name: str, value: str
) -> None:
    with pytest.raises(HttpActionError) as refusal:
        send("GET", f"{server_url}/echo", NoConnectionTransport(), headers=[(name, value)])
    assert SECRET not in str(refusal.value)


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding"])
def test_headers_the_sender_sets_are_refused(server_url, name: str) -> None:
    with pytest.raises(HttpActionError, match="set automatically"):
        send("GET", f"{server_url}/echo", NoConnectionTransport(), headers=[(name, "1")])


# --- Egress -------------------------------------------------------------------------------


def test_loopback_is_refused_before_connecting_when_not_allowed(server_url) -> None:
    with pytest.raises(EgressRefused, match="loopback"):
        send("GET", f"{server_url}/echo", NoConnectionTransport(), allowed=[])


def test_connection_goes_to_the_checked_address_with_the_host_name(server, transport) -> None:
    calls: list[str] = []

    def rebinding_resolver(host: str, port: int) -> list[str]:
        # A second lookup would get a forbidden address: there must not be one.
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.0.0.1"]

    output = send(
        "GET",
        f"http://api.test:{server.server_port}/echo",
        transport,
        allowed=["api.test"],
        resolver=rebinding_resolver,
    )
    assert calls == ["api.test"]
    assert received_headers(output["body"])["host"] == f"api.test:{server.server_port}"
    assert [request.url.host for request in transport.requests] == ["127.0.0.1"]


# --- Redirects ----------------------------------------------------------------------------


def redirect_url(server_url: str, status: int, to: str) -> str:
    return f"{server_url}/redirect?status={status}&to={quote(to, safe='')}"


@pytest.mark.parametrize("status", [301, 302, 303])
def test_redirect_is_followed_as_get_without_body(server_url, transport, status: int) -> None:
    output = send(
        "POST",
        redirect_url(server_url, status, "/echo?after=redirect"),
        transport,
        headers=[("Content-Type", "application/json"), ("X-Keep", "1")],
        content=b'{"a": 1}',
    )
    echoed = output["body"]
    assert (echoed["method"], echoed["query"], echoed["body"]) == ("GET", "after=redirect", "")
    headers = received_headers(echoed)
    assert "content-type" not in headers
    assert headers["x-keep"] == "1"


@pytest.mark.parametrize("status", [307, 308])
def test_redirect_keeps_method_and_body(server_url, transport, status: int) -> None:
    output = send(
        "POST",
        redirect_url(server_url, status, "/echo"),
        transport,
        headers=[("Content-Type", "application/json")],
        content=b'{"a": 1}',
    )
    echoed = output["body"]
    assert (echoed["method"], echoed["body"]) == ("POST", '{"a": 1}')
    assert received_headers(echoed)["content-type"] == "application/json"


def test_redirect_loop_stops_after_the_limit(server_url, transport, settings) -> None:
    settings.HTTP_ACTION_MAX_REDIRECTS = 3
    with pytest.raises(HttpActionError, match="Stopped after 3 redirects"):
        send("GET", f"{server_url}/loop", transport)
    assert len(transport.requests) == 4


def test_redirects_up_to_the_limit_are_followed(server_url, transport, settings) -> None:
    settings.HTTP_ACTION_MAX_REDIRECTS = 2
    second = redirect_url(server_url, 302, "/echo")
    output = send("GET", redirect_url(server_url, 302, second), transport)
    assert output["body"]["path"] == "/echo"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        # 127.0.0.1 is allowed by the test settings, the rest of 127.0.0.0/8 is not.
        ("http://2130706434:1/", r"2130706434 \(127.0.0.2\) is a loopback"),
        ("file:///etc/passwd", "file:// is not supported"),
    ],
)
def test_redirect_to_a_forbidden_address_is_refused_without_connecting(
    server_url, transport, location: str, reason: str
) -> None:
    with pytest.raises(EgressRefused, match=reason):
        send("GET", redirect_url(server_url, 302, location), transport)
    assert [request.url.path for request in transport.requests] == ["/redirect"]


def test_redirect_to_another_host_drops_credentials(server, server_url, transport) -> None:
    other_host = f"http://api.test:{server.server_port}/echo"
    output = send(
        "GET",
        redirect_url(server_url, 302, other_host),
        transport,
        headers=[("Authorization", f"Bearer {SECRET}"), ("Cookie", "id=1"), ("X-Keep", "1")],
        allowed=["127.0.0.1", "api.test"],
    )
    headers = received_headers(output["body"])
    assert "authorization" not in headers
    assert "cookie" not in headers
    assert headers["x-keep"] == "1"
    assert headers["host"] == f"api.test:{server.server_port}"


def test_redirect_on_the_same_host_keeps_credentials(server_url, transport) -> None:
    output = send(
        "GET",
        redirect_url(server_url, 307, "/echo"),
        transport,
        headers=[("Authorization", f"Bearer {SECRET}")],
    )
    assert received_headers(output["body"])["authorization"] == f"Bearer {SECRET}"


# --- TLS: the certificate is checked against the host name, not the address -------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """A CA and a certificate for api.test signed by it: (certificate, key, CA in PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "api.test")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("api.test")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    certificate_path, key_path = folder / "server.pem", folder / "server.key"
    certificate_path.write_bytes(server_certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate_path, key_path, ca_certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def tls_server(certificates) -> Iterator[QuietServer]:
    certificate_path, key_path, _ = certificates
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate_path, key_path)
    server = start_server(context)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def trust_test_ca(certificates, monkeypatch: pytest.MonkeyPatch) -> None:
    # Verification stays on; only the trusted CA is the test's own.
    context = ssl.create_default_context(cadata=certificates[2].decode())
    monkeypatch.setattr(http_module, "_ssl_context", lambda: context)


def test_https_to_a_pinned_address_verifies_the_host_name(tls_server, trust_test_ca) -> None:
    output = send(
        "GET",
        f"https://api.test:{tls_server.server_port}/echo",
        None,
        allowed=["api.test"],
    )
    assert output["status_code"] == 200
    assert received_headers(output["body"])["host"] == f"api.test:{tls_server.server_port}"


def test_https_certificate_for_another_name_is_rejected(tls_server, trust_test_ca) -> None:
    with pytest.raises(HttpActionError, match="certificate"):
        send(
            "GET",
            f"https://other.test:{tls_server.server_port}/echo",
            None,
            allowed=["other.test"],
        )


def test_a_connection_verified_for_one_name_is_never_used_for_another(
    tls_server, trust_test_ca
) -> None:
    # Both names lead to the same address and port; the first request leaves a verified
    # connection in a pool, which the second, for a name the certificate lacks, must not get.
    first = send("GET", f"https://api.test:{tls_server.server_port}/peer", None)
    assert first["status_code"] == 200
    with pytest.raises(HttpActionError, match="certificate"):
        send("GET", f"https://other.test:{tls_server.server_port}/peer", None)


def test_https_to_the_ip_address_is_checked_against_the_address(tls_server, trust_test_ca) -> None:
    # The certificate names api.test, not 127.0.0.1.
    with pytest.raises(HttpActionError, match="certificate"):
        send("GET", f"https://127.0.0.1:{tls_server.server_port}/echo", None)


# --- Keep-alive -----------------------------------------------------------------------------


def test_connections_are_kept_alive_from_one_request_to_the_next(server) -> None:
    url = f"http://127.0.0.1:{server.server_port}/peer"
    ports = {send("GET", url, None)["body"]["port"] for _ in range(3)}
    assert len(ports) == 1


def test_a_kept_alive_connection_carries_no_cookies_to_the_next_request(server) -> None:
    base = f"http://127.0.0.1:{server.server_port}"
    assert send("GET", f"{base}/cookies", None)["headers"]["set-cookie"]
    assert "cookie" not in received_headers(send("GET", f"{base}/echo", None)["body"])


def test_keep_alive_can_be_turned_off(server, settings, monkeypatch) -> None:
    settings.HTTP_ACTION_KEEPALIVE_CONNECTIONS = 0
    # Pools read the setting when they are made.
    monkeypatch.setattr(http_module, "_POOLS", http_module._Pools(size=256))
    url = f"http://127.0.0.1:{server.server_port}/peer"
    ports = {send("GET", url, None)["body"]["port"] for _ in range(3)}
    assert len(ports) == 3
