from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

import httpx
import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from secretsapp import services
from secretsapp.models import Access, Organization, OrganizationGroup, Role, SecretKey
from tests.factories import (
    PASSWORD,
    MembershipFactory,
    OrganizationFactory,
    OrganizationGroupFactory,
)

RESTRICTED_VALUE = "restricted-value-Zq8#not-for-eyes"


def pem_key(seed: bytes) -> str:
    """A PEM private key's shape (64-character base64 lines between BEGIN/END lines),
    made from ``seed``: a multi-line value as people store them."""
    body = base64.b64encode(hashlib.shake_256(seed).digest(1280)).decode()
    lines = [body[start : start + 64] for start in range(0, len(body), 64)]
    return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"


TEAM_VALUE = "team-value-Yp7&not-for-eyes"


@dataclass
class Personas:
    """The six personas of STYLE.md, with a Restricted and a Team key made by the admin."""

    organization: Organization
    admin: AbstractBaseUser
    member_use: AbstractBaseUser
    member_manage: AbstractBaseUser
    member_nothing: AbstractBaseUser
    viewer: AbstractBaseUser
    outsider: AbstractBaseUser  # admin of another organization
    other_organization: Organization
    group: OrganizationGroup
    restricted_key: SecretKey
    team_key: SecretKey

    def by_name(self, name: str) -> AbstractBaseUser:
        return getattr(self, name)


PERSONA_NAMES = ["admin", "member_use", "member_manage", "member_nothing", "viewer", "outsider"]


@pytest.fixture
def personas(db) -> Personas:
    organization = OrganizationFactory(name="Acme")
    other_organization = OrganizationFactory(name="Globex")

    def member(username: str, role: str, org: Organization = organization):
        return MembershipFactory(user__username=username, organization=org, role=role).user

    admin = member("alice-admin", Role.ADMIN)
    member_use = member("bob-use", Role.MEMBER)
    member_manage = member("carol-manage", Role.MEMBER)
    member_nothing = member("dave-nothing", Role.MEMBER)
    viewer = member("erin-viewer", Role.VIEWER)
    outsider = member("mallory-outsider", Role.ADMIN, other_organization)
    group = OrganizationGroupFactory(organization=organization, name="Platform")
    restricted_key = services.create_secret_key(
        admin,
        name="Stripe live",
        value=RESTRICTED_VALUE,
        access_level=Access.RESTRICTED,
        grants=[
            {"principal_type": "user", "principal_id": member_use.pk, "level": "use"},
            {"principal_type": "user", "principal_id": member_manage.pk, "level": "manage"},
        ],
    )
    team_key = services.create_secret_key(admin, name="Slack webhook", value=TEAM_VALUE)
    return Personas(
        organization=organization,
        admin=admin,
        member_use=member_use,
        member_manage=member_manage,
        member_nothing=member_nothing,
        viewer=viewer,
        outsider=outsider,
        other_organization=other_organization,
        group=group,
        restricted_key=restricted_key,
        team_key=team_key,
    )


@pytest.fixture(autouse=True)
def _clear_cache(request, django_db_blocker):
    """Throttle counters live in the cache table, which live-server tests do not roll
    back: clear it after every test that had a database."""
    yield
    if {"db", "transactional_db", "live_server"} & set(request.fixturenames):
        with django_db_blocker.unblock():
            cache.clear()


def api_client_for(user) -> APIClient:
    """An API client authenticated with the user's token, as the workflow runner is."""
    client = APIClient()
    if user is not None:
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def http_action(url: str = "http://127.0.0.1:9/", **config) -> dict:
    """A send_api_request config (method GET unless given)."""
    return {"method": "GET", "url": url, **config}


def code_action(code: str = "return 1", language: str = "python", **variables: str) -> dict:
    return {
        "language": language,
        "code": code,
        "variables": [{"name": name, "value": value} for name, value in variables.items()],
    }


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers with what it received, so tests can see what left the app.

    /echo → JSON {method, path, query, headers, body}; /raw → the Authorization header and
    body as plain text, raw, URL-encoded and base64 (a target that leaks what it got);
    /status/<code> → that status; /redirect?to=<url> → 302 to it.
    """

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        path, _, query = self.path.partition("?")
        self.server.requests.append(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "headers": dict(self.headers),
                "body": body,
            }
        )
        if path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), "application/json", b'{"error": "as asked"}')
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", unquote(query.removeprefix("to=")))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/raw":
            leaked = self.headers.get("Authorization", "") + "|" + body + "|" + unquote(query)
            text = "\n".join(
                [leaked, quote(leaked, safe=""), base64.b64encode(leaked.encode()).decode()]
            )
            self._send(200, "text/plain", text.encode())
        else:
            echo = {
                "method": self.command,
                "path": path,
                "query": query,
                "headers": dict(self.headers),
                "body": body,
            }
            self._send(200, "application/json", json.dumps(echo).encode())

    def _send(self, status: int, content_type: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def echo_server():
    """A real HTTP server on 127.0.0.1 (allowed by EGRESS_ALLOWED_HOSTS in tests)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def api(live_server, user, timeout: float = 30) -> httpx.Client:
    """The API over real HTTP, with the user's token."""
    token, _ = Token.objects.get_or_create(user=user)
    return httpx.Client(
        base_url=f"{live_server.url}/api/v1",
        # No keep-alive: a connection left open would outlive the test in a server thread.
        headers={"Authorization": f"Token {token.key}", "Connection": "close"},
        timeout=timeout,
    )


def browser(live_server, user) -> httpx.Client:
    """A signed-in session, sending the CSRF token as the pages' htmx does."""
    client = httpx.Client(base_url=live_server.url, headers={"Connection": "close"}, timeout=30)
    client.get("/login/")
    signed_in = client.post(
        "/login/",
        data={
            "username": user.get_username(),
            "password": PASSWORD,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    assert signed_in.status_code == 302, signed_in.text
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    return client
