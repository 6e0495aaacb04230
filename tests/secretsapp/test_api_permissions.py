"""Every /api/v1/ endpoint × the six personas, as one table (pretix test_permissions style).

Targets are objects of the first organization (Acme); the outsider is the admin of
another organization, so Acme's objects must be 404 to them, never 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from secretsapp.models import AuditEvent, Membership, OrganizationGroup, SecretKey
from tests.conftest import PERSONA_NAMES, Personas, api_client_for
from tests.factories import PASSWORD


@dataclass(frozen=True)
class Endpoint:
    method: str
    url: Callable[[Personas], str]
    body: Callable[[Personas], dict] | None = None


def _members(p: Personas) -> str:
    return "/api/v1/members/"


def _member(p: Personas) -> str:
    return f"/api/v1/members/{p.member_nothing.pk}/"


def _group(p: Personas) -> str:
    return f"/api/v1/groups/{p.group.pk}/"


def _restricted(p: Personas) -> str:
    return f"/api/v1/secrets/{p.restricted_key.pk}/"


def _team(p: Personas) -> str:
    return f"/api/v1/secrets/{p.team_key.pk}/"


ENDPOINTS = {
    "members.list": Endpoint("get", _members),
    "members.retrieve": Endpoint("get", _member),
    "members.create": Endpoint(
        "post",
        _members,
        lambda p: {"username": "newbie", "email": "n@example.com", "password": PASSWORD},
    ),
    "members.update": Endpoint("patch", _member, lambda p: {"role": "viewer"}),
    "members.delete": Endpoint("delete", _member),
    "groups.list": Endpoint("get", lambda p: "/api/v1/groups/"),
    "groups.retrieve": Endpoint("get", _group),
    "groups.create": Endpoint("post", lambda p: "/api/v1/groups/", lambda p: {"name": "Ops"}),
    "groups.update": Endpoint("patch", _group, lambda p: {"name": "Platform team"}),
    "groups.delete": Endpoint("delete", _group),
    "secrets.list": Endpoint("get", lambda p: "/api/v1/secrets/"),
    "secrets.create": Endpoint(
        "post", lambda p: "/api/v1/secrets/", lambda p: {"name": "New", "value": "new-value-123"}
    ),
    "secrets.retrieve.restricted": Endpoint("get", _restricted),
    "secrets.update.restricted": Endpoint("patch", _restricted, lambda p: {"name": "Renamed"}),
    "secrets.delete.restricted": Endpoint("delete", _restricted),
    "secrets.retrieve.team": Endpoint("get", _team),
    "secrets.update.team": Endpoint("patch", _team, lambda p: {"access": "restricted"}),
    "secrets.delete.team": Endpoint("delete", _team),
    "audit-events.list": Endpoint("get", lambda p: "/api/v1/audit-events/"),
}

# Expected status per persona, in the order of PERSONA_NAMES:
#            admin member_use member_manage member_nothing viewer outsider
EXPECTED = {
    "members.list": (200, 200, 200, 200, 200, 200),
    "members.retrieve": (200, 200, 200, 200, 200, 404),
    "members.create": (201, 403, 403, 403, 403, 201),
    "members.update": (200, 403, 403, 403, 403, 404),
    "members.delete": (204, 403, 403, 403, 403, 404),
    "groups.list": (200, 200, 200, 200, 200, 200),
    "groups.retrieve": (200, 200, 200, 200, 200, 404),
    "groups.create": (201, 403, 403, 403, 403, 201),
    "groups.update": (200, 403, 403, 403, 403, 404),
    "groups.delete": (204, 403, 403, 403, 403, 404),
    "secrets.list": (200, 200, 200, 200, 200, 200),
    "secrets.create": (201, 201, 201, 201, 403, 201),
    "secrets.retrieve.restricted": (200, 200, 200, 404, 404, 404),
    "secrets.update.restricted": (200, 403, 200, 404, 404, 404),
    "secrets.delete.restricted": (204, 403, 204, 404, 404, 404),
    "secrets.retrieve.team": (200, 200, 200, 200, 200, 404),
    "secrets.update.team": (200, 403, 403, 403, 403, 404),
    "secrets.delete.team": (204, 403, 403, 403, 403, 404),
    "audit-events.list": (200, 403, 403, 403, 403, 200),
}


def _fingerprint() -> tuple:
    """What a refused request must not change (denials may add a `denied` audit event)."""
    return (
        sorted(SecretKey.objects.values_list("name", "access", "version", "updated_at")),
        sorted(Membership.objects.values_list("user_id", "role")),
        sorted(OrganizationGroup.objects.values_list("name", flat=True)),
        AuditEvent.objects.exclude(action="denied").count(),
    )


def test_every_endpoint_is_in_the_table():
    assert set(ENDPOINTS) == set(EXPECTED)


@pytest.mark.parametrize("persona", PERSONA_NAMES)
@pytest.mark.parametrize("endpoint_name", list(EXPECTED))
def test_api_permission_matrix(personas: Personas, endpoint_name: str, persona: str):
    endpoint = ENDPOINTS[endpoint_name]
    expected = EXPECTED[endpoint_name][PERSONA_NAMES.index(persona)]
    client = api_client_for(personas.by_name(persona))
    before = _fingerprint()

    response = getattr(client, endpoint.method)(
        endpoint.url(personas),
        endpoint.body(personas) if endpoint.body else None,
        format="json",
    )

    assert response.status_code == expected, response.content
    if expected >= 400:
        assert "detail" in response.json()
        assert _fingerprint() == before, "a refused request changed something"


@pytest.mark.parametrize("endpoint_name", list(EXPECTED))
def test_anonymous_gets_401_everywhere(personas: Personas, endpoint_name: str):
    endpoint = ENDPOINTS[endpoint_name]
    response = getattr(api_client_for(None), endpoint.method)(
        endpoint.url(personas),
        endpoint.body(personas) if endpoint.body else None,
        format="json",
    )
    assert response.status_code == 401
    assert response.json()["detail"]


def test_outsider_lists_only_their_own_organization(personas: Personas):
    client = api_client_for(personas.outsider)
    members = client.get("/api/v1/members/").json()["results"]
    assert [member["username"] for member in members] == ["mallory-outsider"]
    assert client.get("/api/v1/groups/").json()["count"] == 0
    assert client.get("/api/v1/secrets/").json()["count"] == 0
    events = client.get("/api/v1/audit-events/").json()["results"]
    assert events == []


def test_bad_token_is_401(personas: Personas):
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/v1/secrets/").status_code == 401


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/members/0.5/",
        "/api/v1/members/99999999999999999999/",
        "/api/v1/groups/-1/",
        "/api/v1/groups/99999999999999999999/",
        "/api/v1/secrets/0.5/",
        "/api/v1/no-such-thing/",
    ],
)
def test_unknown_ids_and_routes_are_json_404(personas: Personas, url: str):
    response = api_client_for(personas.admin).get(url)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]
