"""The REST contract end to end over real HTTP, and no key value in any response.

A live server runs the app; httpx plays the workflow runner and the admin's script.
Every response of the scenario is recorded and searched for the keys' values in plain,
URL-encoded, JSON-escaped and base64 forms.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import httpx
import pytest

from secretsapp import services
from tests.factories import PASSWORD

# Values with characters that need escaping in URLs, JSON and HTML.
CANARIES = [
    'canary-A1 <b>&"quoted"\'/+=?%é',
    "canary-B2-plain-0123456789",
    "canary-C3-rotated\\n\nnewline",
]


def _forms(value: str) -> set[str]:
    encoded = value.encode()
    return {
        value,
        quote(value, safe=""),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        base64.b64encode(encoded).decode(),
        base64.urlsafe_b64encode(encoded).decode(),
    }


class Recorder:
    """An httpx client that keeps every response for the leak scan."""

    def __init__(self, base_url: str, token: str | None = None):
        headers = {"Authorization": f"Token {token}"} if token else {}
        self.client = httpx.Client(base_url=base_url, headers=headers, timeout=10)
        self.responses: list[httpx.Response] = []

    def __call__(self, method: str, url: str, **kwargs) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        self.responses.append(response)
        return response


@pytest.fixture
def admin_token(live_server, transactional_db) -> str:
    services.create_organization(
        "Acme", admin_username="alice", admin_email="alice@acme.example", admin_password=PASSWORD
    )
    response = httpx.post(
        f"{live_server.url}/api/v1/auth/token/",
        json={"username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 200
    return response.json()["token"]


def test_contract_end_to_end_without_leaks(live_server, admin_token):
    base = f"{live_server.url}/api/v1"
    admin = Recorder(base, admin_token)
    anonymous = Recorder(base)

    # Authentication
    assert anonymous("GET", "/secrets/").status_code == 401
    assert (
        anonymous("POST", "/auth/token/", json={"username": "alice", "password": "x"}).status_code
        == 400
    )

    # Members: admin adds a member and a viewer
    response = admin(
        "POST",
        "/members/",
        json={
            "username": "bob",
            "email": "bob@acme.example",
            "password": PASSWORD,
            "role": "member",
        },
    )
    assert response.status_code == 201
    bob = response.json()
    assert set(bob) == {"id", "username", "email", "role"}
    viewer = admin(
        "POST",
        "/members/",
        json={
            "username": "vic",
            "email": "vic@acme.example",
            "password": PASSWORD,
            "role": "viewer",
        },
    ).json()
    assert len(admin("GET", "/members/").json()["results"]) == 3

    # Groups
    response = admin("POST", "/groups/", json={"name": "Payments", "members": [bob["id"]]})
    assert response.status_code == 201
    group = response.json()
    assert group == {"id": group["id"], "name": "Payments", "members": [bob["id"]]}
    response = admin(
        "PATCH", f"/groups/{group['id']}/", json={"members": [bob["id"], viewer["id"]]}
    )
    assert response.json()["members"] == sorted([bob["id"], viewer["id"]])

    # Secret keys: one restricted to the group, one for the team
    response = admin(
        "POST",
        "/secrets/",
        json={
            "name": "Stripe",
            "value": CANARIES[0],
            "access": "restricted",
            "grants": [{"principal_type": "group", "principal_id": group["id"], "level": "use"}],
        },
    )
    assert response.status_code == 201
    stripe = response.json()
    assert response.headers["ETag"]
    team = admin("POST", "/secrets/", json={"name": "Slack", "value": CANARIES[1]}).json()
    assert team["access"] == "team"

    # A bad write that carries a value: refused, and the value is not echoed back
    response = admin("POST", "/secrets/", json={"name": "stripe", "value": CANARIES[1]})
    assert response.status_code == 400
    assert "name" in response.json()

    # Bob, the workflow runner's identity, signs in and sees what he may use
    bob_token = anonymous(
        "POST", "/auth/token/", json={"username": "bob", "password": PASSWORD}
    ).json()["token"]
    runner = Recorder(base, bob_token)
    listed = runner("GET", "/secrets/").json()
    assert {key["name"]: (key["can_use"], key["can_manage"]) for key in listed["results"]} == {
        "Slack": (True, False),
        "Stripe": (True, False),
    }
    assert [key["name"] for key in runner("GET", "/secrets/?search=str").json()["results"]] == [
        "Stripe"
    ]
    assert runner("GET", f"/secrets/{stripe['id']}/").status_code == 200
    assert runner("PATCH", f"/secrets/{stripe['id']}/", json={"name": "Mine"}).status_code == 403
    assert runner("POST", "/members/", json={}).status_code == 403
    assert runner("GET", "/audit-events/").status_code == 403

    # The admin rotates the value, renames, and a stale write is refused
    etag = admin("GET", f"/secrets/{stripe['id']}/").headers["ETag"]
    response = admin(
        "PATCH",
        f"/secrets/{stripe['id']}/",
        json={"value": CANARIES[2]},
        headers={"If-Match": etag},
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2
    response = admin(
        "PATCH",
        f"/secrets/{stripe['id']}/",
        json={"name": "Stripe prod"},
        headers={"If-Match": etag},
    )
    assert response.status_code == 412
    response = admin("PATCH", f"/secrets/{stripe['id']}/", json={"name": "Stripe prod"})
    assert (response.json()["name"], response.json()["version"]) == ("Stripe prod", 2)

    # Audit log, newest first, filtered by key
    events = admin("GET", f"/audit-events/?secret={stripe['id']}").json()["results"]
    assert [event["action"] for event in events] == [
        "renamed",
        "value_updated",
        "denied",
        "created",
    ]

    # Role change, removal, deletion
    assert (
        admin("PATCH", f"/members/{viewer['id']}/", json={"role": "member"}).json()["role"]
        == "member"
    )
    assert admin("DELETE", f"/secrets/{team['id']}/").status_code == 204
    assert admin("GET", f"/secrets/{team['id']}/").status_code == 404
    assert admin("DELETE", f"/groups/{group['id']}/").status_code == 204
    assert admin("DELETE", f"/members/{bob['id']}/").status_code == 204
    assert runner("GET", "/secrets/").status_code == 401

    # Schema and docs are served
    schema = anonymous("GET", f"{live_server.url}/api/schema/")
    assert schema.status_code == 200
    assert anonymous("GET", f"{live_server.url}/api/docs/").status_code == 200

    for recorder in (admin, anonymous, runner):
        recorder.client.close()
    recorded = admin.responses + anonymous.responses + runner.responses
    assert len(recorded) >= 30
    for response in recorded:
        text = response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        for canary in CANARIES:
            for form in _forms(canary):
                assert form not in text, f"{response.request.method} {response.request.url} leaked"


def test_a_manager_who_drops_their_own_access_gets_200_over_http(live_server, admin_token):
    base = f"{live_server.url}/api/v1"
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Token {admin_token}"}, timeout=10
    ) as admin:
        bob = admin.post(
            "/members/",
            json={"username": "bob", "email": "bob@acme.example", "password": PASSWORD},
        ).json()
        key = admin.post(
            "/secrets/",
            json={
                "name": "Stripe",
                "value": CANARIES[1],
                "access": "restricted",
                "grants": [
                    {"principal_type": "user", "principal_id": bob["id"], "level": "manage"}
                ],
            },
        ).json()
        bob_token = httpx.post(
            f"{base}/auth/token/", json={"username": "bob", "password": PASSWORD}
        ).json()["token"]
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Token {bob_token}"}, timeout=10
        ) as manager:
            response = manager.patch(f"/secrets/{key['id']}/", json={"grants": []})

            assert response.status_code == 200, response.text
            assert response.json() == {
                "detail": "Saved. You no longer have access to this secret key.",
                "id": key["id"],
                "can_use": False,
                "can_manage": False,
                "warnings": [],
            }
            assert manager.get(f"/secrets/{key['id']}/").status_code == 404
        # Saved and audited: the admin sees the grants gone and the change in the log.
        assert admin.get(f"/secrets/{key['id']}/").json()["grants"] == []
        events = admin.get(f"/audit-events/?secret={key['id']}").json()["results"]
        assert [(event["action"], event["actor"]) for event in events][0] == (
            "grants_changed",
            bob["id"],
        )
        schema = httpx.get(f"{live_server.url}/api/schema/?format=json").json()
        assert "SecretKeyPatchResult" in schema["components"]["schemas"]
