"""Token authentication, session authentication with CSRF, and throttling."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from secretsapp.api.throttles import (
    FailedLoginByAddressThrottle,
    FailedLoginByUsernameThrottle,
    WriteRateThrottle,
)
from tests.conftest import Personas, api_client_for
from tests.factories import PASSWORD

TOKEN_URL = "/api/v1/auth/token/"


def test_token_for_good_credentials(personas: Personas):
    client = APIClient()
    response = client.post(TOKEN_URL, {"username": "bob-use", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/secrets/").status_code == 200


@pytest.mark.parametrize(
    "body",
    [{"username": "bob-use", "password": "wrong"}, {"username": "nobody", "password": "x"}, {}],
)
def test_bad_credentials_are_400(personas: Personas, body):
    response = APIClient().post(TOKEN_URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["detail"]
    assert "token" not in response.json()


def test_removed_member_token_stops_working(personas: Personas):
    client = api_client_for(personas.member_use)
    assert client.get("/api/v1/secrets/").status_code == 200
    api_client_for(personas.admin).delete(f"/api/v1/members/{personas.member_use.pk}/")
    assert client.get("/api/v1/secrets/").status_code == 401
    response = APIClient().post(
        TOKEN_URL, {"username": "bob-use", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 400


def test_failed_logins_are_throttled_per_username(personas: Personas, monkeypatch):
    monkeypatch.setattr(
        FailedLoginByUsernameThrottle, "THROTTLE_RATES", {"failed_logins_per_username": "3/hour"}
    )
    client = APIClient()
    for _ in range(3):
        assert (
            client.post(
                TOKEN_URL, {"username": "bob-use", "password": "guess"}, format="json"
            ).status_code
            == 400
        )
    blocked = client.post(TOKEN_URL, {"username": "BOB-USE", "password": PASSWORD}, format="json")
    assert blocked.status_code == 429
    assert "Retry-After" in blocked
    assert blocked.json()["detail"]
    # Another account is not locked by bob's failures.
    other = client.post(
        TOKEN_URL, {"username": "carol-manage", "password": PASSWORD}, format="json"
    )
    assert other.status_code == 200


def test_successful_logins_are_not_counted(personas: Personas, monkeypatch):
    monkeypatch.setattr(
        FailedLoginByAddressThrottle, "THROTTLE_RATES", {"failed_logins_per_address": "2/hour"}
    )
    client = APIClient()
    for _ in range(5):
        response = client.post(
            TOKEN_URL, {"username": "bob-use", "password": PASSWORD}, format="json"
        )
        assert response.status_code == 200


def test_failed_logins_are_throttled_per_address(personas: Personas, monkeypatch):
    monkeypatch.setattr(
        FailedLoginByAddressThrottle, "THROTTLE_RATES", {"failed_logins_per_address": "2/hour"}
    )
    client = APIClient()
    for username in ("a", "b"):
        client.post(TOKEN_URL, {"username": username, "password": "x"}, format="json")
    response = client.post(TOKEN_URL, {"username": "bob-use", "password": PASSWORD}, format="json")
    assert response.status_code == 429


def test_writes_are_throttled_per_user_but_reads_are_not(personas: Personas, monkeypatch):
    monkeypatch.setattr(WriteRateThrottle, "THROTTLE_RATES", {"writes": "2/min"})
    client = api_client_for(personas.member_use)
    for index in range(2):
        response = client.post(
            "/api/v1/secrets/", {"name": f"Key {index}", "value": "value-123456"}, format="json"
        )
        assert response.status_code == 201
    throttled = client.post(
        "/api/v1/secrets/", {"name": "Key 3", "value": "value-123456"}, format="json"
    )
    assert throttled.status_code == 429
    assert client.get("/api/v1/secrets/").status_code == 200
    # Another user has their own budget.
    other = api_client_for(personas.member_manage).post(
        "/api/v1/secrets/", {"name": "Key 4", "value": "value-123456"}, format="json"
    )
    assert other.status_code == 201


def test_session_auth_requires_csrf(personas: Personas):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(personas.member_use)
    assert client.get("/api/v1/secrets/").status_code == 200
    response = client.post(
        "/api/v1/secrets/", {"name": "Via session", "value": "value-123456"}, format="json"
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_whoami_tells_who_the_token_is(personas: Personas):
    response = api_client_for(personas.viewer).get("/api/v1/auth/whoami/")
    assert response.json() == {
        "id": personas.viewer.pk,
        "username": "erin-viewer",
        "organization": "Acme",
        "role": "viewer",
    }
    assert APIClient().get("/api/v1/auth/whoami/").status_code == 401
