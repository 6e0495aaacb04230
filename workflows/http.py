"""The sender of Send API Request: one HTTP request, redirects followed by hand.

Every hop goes through the egress guard and connects to the address the guard checked
(the URL's host is replaced by that address; Host and TLS SNI keep the name), so DNS
rebinding cannot lead a request somewhere the guard never saw. Error messages never
contain request headers or bodies: they may hold secret values.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import json
import re
import socket
import ssl
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from django.conf import settings

from workflows import cancellation
from workflows.egress import DEFAULT_PORTS, ResolvedTarget, Resolver, resolve_and_check

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SUPPORTED_METHODS = frozenset(METHODS)
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# 301/302/303 are repeated as a GET without a body, as browsers do.
REDIRECT_TO_GET_STATUSES = frozenset({301, 302, 303})
# Set by the sender from the URL and the body; a user value could only contradict them.
MANAGED_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
# Not sent on to another origin after a redirect.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# Describe a body, so they go when a redirect drops the body.
BODY_HEADERS = frozenset({"content-type", "content-encoding"})
# Only encodings the bounded decoder below handles are asked for.
ACCEPTED_ENCODINGS = "gzip, deflate"

TOKEN_PATTERN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Any control character but tab: CR, LF and NUL could end the header and start another.
FORBIDDEN_VALUE_PATTERN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

Header = tuple[str, str]


class HttpActionError(Exception):
    """The request failed; the message is safe to show (no header or body content)."""


def send_request(
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]],
    content: bytes | None,
    allowed: list[str] | None = None,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Send the request and return {"status_code", "headers", "body"}.

    Raises EgressRefused when a URL (the first or a redirect's) may not be reached, and
    HttpActionError when the request cannot be sent or its response cannot be read.
    A 4xx/5xx response is a result, not an error.
    """
    hop = Hop(_checked_method(method), url, _checked_headers(headers), content)
    with transport or contextlib.nullcontext():  # a transport given for one request is closed
        return _send(hop, allowed, resolver, transport)


def _send(
    hop: Hop,
    allowed: list[str] | None,
    resolver: Resolver | None,
    transport: httpx.BaseTransport | None,
) -> dict[str, Any]:
    redirects_followed = 0
    while True:
        target = resolve_and_check(hop.url, allowed=allowed, resolver=resolver)
        client = _client(transport or _POOLS.transport_for(target))
        with _translated_errors(target), _stream(client, hop, target) as response:
            location = _redirect_location(response)
            if location is None:
                return _output(response)
        if redirects_followed >= settings.HTTP_ACTION_MAX_REDIRECTS:
            raise HttpActionError(
                f"Stopped after {redirects_followed} redirects "
                "(HTTP_ACTION_MAX_REDIRECTS); the server may be redirecting in a loop."
            )
        redirects_followed += 1
        hop = _next_hop(hop, target, response.status_code, location)


@dataclass(frozen=True)
class Hop:
    """What is sent to one URL of a redirect chain."""

    method: str
    url: str
    headers: list[Header]
    content: bytes | None


def _next_hop(hop: Hop, target: ResolvedTarget, status_code: int, location: str) -> Hop:
    url = _redirect_url(target, location)
    headers, method, content = hop.headers, hop.method, hop.content
    if _origin(httpx.URL(url)) != _origin(target.url):
        headers = _without(headers, CREDENTIAL_HEADERS)
    if status_code in REDIRECT_TO_GET_STATUSES:
        method, content = "GET", None
        headers = _without(headers, BODY_HEADERS)
    return Hop(method, url, headers, content)


def _checked_method(method: str) -> str:
    normalized = method.upper()
    if normalized not in SUPPORTED_METHODS:
        supported = ", ".join(sorted(SUPPORTED_METHODS))
        raise HttpActionError(f"The method {method!r} is not supported; use one of {supported}.")
    return normalized


def _checked_headers(headers: list[tuple[str, str]]) -> list[Header]:
    checked: list[Header] = []
    for raw_name, raw_value in headers:
        name = raw_name.strip()
        if not TOKEN_PATTERN.fullmatch(name):
            raise HttpActionError(
                f"The header name {name[:100]!r} is not valid: use letters, digits and "
                "-!#$%&'*+.^_`|~ only (no spaces, colons or line breaks)."
            )
        if name.lower() in MANAGED_HEADERS:
            raise HttpActionError(
                f"The {name} header is set automatically; remove it from the headers."
            )
        value = raw_value.strip(" \t")
        if FORBIDDEN_VALUE_PATTERN.search(value):
            # The value is not quoted: it may be, or contain, a secret.
            raise HttpActionError(
                f"The value of the header {name} contains a line break or another control "
                "character; refused."
            )
        checked.append((name, value))
    return checked


def _without(headers: list[Header], names: frozenset[str]) -> list[Header]:
    return [(name, value) for name, value in headers if name.lower() not in names]


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle is the slow part of creating a client.
    return httpx.create_ssl_context()


class _Pools:
    """Keep-alive connections for outbound requests: one pool per checked address, port
    and TLS name. httpx keys its pool by the URL's host, which is the checked address
    here, so one shared pool could send a request for one host name over a connection
    whose certificate was verified for another name at the same address; one pool per
    name cannot. A pool holds connections only to an address the egress guard allowed;
    every request is checked again before it picks one. Pools are shared by the runs of
    all organizations: a connection carries no state from one request to the next (no
    cookies are kept, and httpcore drops a connection that has unread data)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._transports: OrderedDict[tuple, httpx.HTTPTransport] = OrderedDict()
        self._lock = threading.Lock()

    def transport_for(self, target: ResolvedTarget) -> httpx.HTTPTransport:
        key = (target.scheme, str(target.address), target.port, target.sni_hostname)
        with self._lock:
            transport = self._transports.get(key)
            if transport is not None:
                self._transports.move_to_end(key)
                return transport
            transport = _AbortableTransport(_ssl_context())
            self._transports[key] = transport
            if len(self._transports) > self._size:
                _, evicted = self._transports.popitem(last=False)
                # A request still using it (one of 256 destinations, the least recently
                # used) fails with a clear error; closing keeps sockets from leaking.
                evicted.close()
            return transport


class _AbortableTransport(httpx.HTTPTransport):
    """httpx's transport over a network backend whose reads and writes a cancelled run
    aborts from another thread (``workflows.cancellation``): the socket is shut down, so
    the call returns at once instead of at its timeout."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx builds its pool without a way to name the network backend; this is the
        # pool it would build for these settings, with ours.
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=None,
            max_keepalive_connections=settings.HTTP_ACTION_KEEPALIVE_CONNECTIONS,
            keepalive_expiry=settings.HTTP_ACTION_KEEPALIVE_SECONDS,
            network_backend=_AbortableBackend(),
        )


class _AbortableBackend(httpcore.SyncBackend):
    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _AbortableStream(super().connect_tcp(*args, **kwargs))


class _AbortableStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def _abort(self) -> None:
        sock = self._stream.get_extra_info("socket")
        if sock is not None:
            # The plain socket's shutdown, also under TLS: it wakes a thread blocked in recv.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with cancellation.abortable(self._abort):
            return self._stream.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with cancellation.abortable(self._abort):
            self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        with cancellation.abortable(self._abort):
            return _AbortableStream(self._stream.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


_POOLS = _Pools(size=256)


def _client(transport: httpx.BaseTransport) -> httpx.Client:
    # A client per request (it would keep cookies from one run for the next); the
    # transport holds the connections. The client is not closed: that closes the pool.
    return httpx.Client(
        transport=transport,
        # No proxies, .netrc credentials or other environment-driven behaviour.
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(
            connect=settings.HTTP_ACTION_CONNECT_TIMEOUT,
            read=settings.HTTP_ACTION_READ_TIMEOUT,
            write=settings.HTTP_ACTION_READ_TIMEOUT,
            pool=settings.HTTP_ACTION_CONNECT_TIMEOUT,
        ),
        headers={"Accept-Encoding": ACCEPTED_ENCODINGS},
    )


def _stream(
    client: httpx.Client, hop: Hop, target: ResolvedTarget
) -> AbstractContextManager[httpx.Response]:
    wire_headers = [(b"Host", target.host_header.encode("ascii"))] + [
        (name.encode("ascii"), value.encode("utf-8")) for name, value in hop.headers
    ]
    # With the address in the URL, TLS must still check the certificate against the name.
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    return client.stream(
        hop.method,
        target.connect_url,
        headers=wire_headers,
        content=hop.content,
        extensions=extensions,
    )


@contextmanager
def _translated_errors(target: ResolvedTarget) -> Iterator[None]:
    """Turn httpx errors into messages that name the server but never the request: some
    httpx messages quote header values."""
    where = f"{target.host}:{target.port}"
    try:
        yield
    except httpx.ConnectTimeout:
        seconds = settings.HTTP_ACTION_CONNECT_TIMEOUT
        raise HttpActionError(f"Timed out connecting to {where} after {seconds:g} s.") from None
    except httpx.ReadTimeout:
        seconds = settings.HTTP_ACTION_READ_TIMEOUT
        raise HttpActionError(
            f"Timed out waiting for {where}: no data for {seconds:g} s."
        ) from None
    except httpx.TimeoutException:
        raise HttpActionError(f"Timed out sending the request to {where}.") from None
    except httpx.ConnectError as error:
        detail = str(error) or "connection failed"
        raise HttpActionError(f"Could not connect to {where}: {detail}") from None
    except httpx.RemoteProtocolError:
        raise HttpActionError(f"{where} sent a response that is not valid HTTP.") from None
    except httpx.LocalProtocolError:
        raise HttpActionError(
            f"The request to {where} could not be sent: it is not valid HTTP."
        ) from None
    except httpx.HTTPError as error:
        raise HttpActionError(f"The request to {where} failed ({type(error).__name__}).") from None


def _redirect_location(response: httpx.Response) -> str | None:
    if response.status_code not in REDIRECT_STATUSES:
        return None
    # A redirect without a Location is an ordinary response.
    return response.headers.get("location") or None


def _redirect_url(target: ResolvedTarget, location: str) -> str:
    try:
        # Relative to the URL as written (host name), not to the address connected to.
        return str(target.url.join(location))
    except (httpx.InvalidURL, ValueError):
        raise HttpActionError(
            f"{target.host}:{target.port} redirected to a location that is not a valid URL."
        ) from None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.raw_host.decode("ascii"), url.port or DEFAULT_PORTS.get(url.scheme))


def _output(response: httpx.Response) -> dict[str, Any]:
    body = _read_body(response)
    return {
        "status_code": response.status_code,
        "headers": _output_headers(response),
        "body": _parsed_body(response, body),
    }


def _output_headers(response: httpx.Response) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _read_body(response: httpx.Response) -> bytes:
    limit = settings.HTTP_ACTION_MAX_RESPONSE_BYTES
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    decoder = BoundedDecoder(response.headers.get("content-encoding", ""), limit)
    raw_size = 0
    chunks: list[bytes] = []
    for raw_chunk in response.iter_raw():
        raw_size += len(raw_chunk)
        if raw_size > limit:
            raise _too_large(limit)
        chunks.append(decoder.decode(raw_chunk))
    chunks.append(decoder.flush())
    return b"".join(chunks)


def _too_large(limit: int) -> HttpActionError:
    return HttpActionError(
        f"The response body is larger than {limit} bytes (HTTP_ACTION_MAX_RESPONSE_BYTES); "
        "reading stopped."
    )


class BoundedDecoder:
    """Undoes Content-Encoding without ever producing more than ``limit`` bytes, so a
    small compressed body cannot expand into a huge one in memory."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        encodings = [
            token.strip().lower()
            for token in content_encoding.split(",")
            if token.strip() and token.strip().lower() != "identity"
        ]
        if len(encodings) > 1 or (encodings and encodings[0] not in {"gzip", "deflate"}):
            raise HttpActionError(
                f"The response uses the Content-Encoding {content_encoding!r}, which is not "
                f"supported (supported: {ACCEPTED_ENCODINGS})."
            )
        # MAX_WBITS | 32 reads both the gzip and the zlib ("deflate") wrapper.
        self._decompressor = zlib.decompressobj(zlib.MAX_WBITS | 32) if encodings else None
        self._limit = limit
        self._remaining = limit

    def decode(self, data: bytes) -> bytes:
        if self._decompressor is None:
            return self._counted(data)
        try:
            # One byte over the remaining allowance is enough to know the limit is passed.
            return self._counted(self._decompressor.decompress(data, self._remaining + 1))
        except zlib.error:
            raise HttpActionError("The compressed response body could not be decoded.") from None

    def flush(self) -> bytes:
        if self._decompressor is None:
            return b""
        try:
            return self._counted(self._decompressor.flush())
        except zlib.error:
            raise HttpActionError("The compressed response body could not be decoded.") from None

    def _counted(self, data: bytes) -> bytes:
        if len(data) > self._remaining:
            raise _too_large(self._limit)
        self._remaining -= len(data)
        return data


def _parsed_body(response: httpx.Response, body: bytes) -> Any:
    text = body.decode(_charset(response), errors="replace")
    if _is_json(response):
        try:
            # NaN and Infinity are not JSON and could not be stored as such: keep the text.
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            pass
    return text


def _charset(response: httpx.Response) -> str:
    charset = response.charset_encoding or "utf-8"
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def _is_json(response: httpx.Response) -> bool:
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type.endswith("/json") or media_type.endswith("+json")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
