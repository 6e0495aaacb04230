"""Secret keys over the API: the contract's fields, search, paging, writes, preconditions."""

from __future__ import annotations

import pytest
from guardian.shortcuts import assign_perm

from secretsapp.models import Access, AuditEvent, SecretKey
from tests.conftest import RESTRICTED_VALUE, Personas, api_client_for
from tests.factories import MembershipFactory, OrganizationGroupFactory, SecretKeyFactory

CONTRACT_FIELDS = {
    "id",
    "name",
    "access",
    "grants",
    "can_use",
    "can_manage",
    "version",
    "created_by",
    "created_at",
    "updated_at",
    "value_updated_at",
    "last_used_at",
}


def test_list_has_the_contract_fields_and_no_value(personas: Personas):
    response = api_client_for(personas.member_use).get("/api/v1/secrets/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert [key["name"] for key in body["results"]] == ["Slack webhook", "Stripe live"]
    for key in body["results"]:
        assert set(key) == CONTRACT_FIELDS
    stripe = body["results"][1]
    assert (stripe["can_use"], stripe["can_manage"]) == (True, False)
    assert stripe["created_by"] == personas.admin.pk
    assert {(g["principal_name"], g["level"]) for g in stripe["grants"]} == {
        ("bob-use", "use"),
        ("carol-manage", "manage"),
    }
    assert RESTRICTED_VALUE not in response.content.decode()


def test_search_filters_by_name(personas: Personas):
    client = api_client_for(personas.admin)
    names = [key["name"] for key in client.get("/api/v1/secrets/?search=strIPE").json()["results"]]
    assert names == ["Stripe live"]


def test_list_is_paginated(personas: Personas):
    SecretKeyFactory.create_batch(60, organization=personas.organization)
    client = api_client_for(personas.member_nothing)
    first = client.get("/api/v1/secrets/").json()
    assert first["count"] == 61  # 60 team keys + the team key of the personas
    assert len(first["results"]) == 50
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 11
    assert client.get("/api/v1/secrets/?page=9").status_code == 404


def test_create_returns_the_key_without_value(personas: Personas):
    client = api_client_for(personas.member_use)
    response = client.post(
        "/api/v1/secrets/",
        {
            "name": "Twilio",
            "value": "twilio-secret-value",
            "access": "restricted",
            "grants": [
                {"principal_type": "group", "principal_id": personas.group.pk, "level": "use"}
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    # Writes also say what the user should know about the value they saved.
    assert set(body) == CONTRACT_FIELDS | {"warnings"}
    assert body["warnings"] == []
    assert (body["can_use"], body["can_manage"], body["version"]) == (True, True, 1)
    assert body["grants"][0]["principal_name"] == "Platform"
    assert response["ETag"]
    assert "twilio-secret-value" not in response.content.decode()
    assert SecretKey.objects.get(pk=body["id"]).value == "twilio-secret-value"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "value": "v-1234567"}, "name"),
        ({"name": "x" * 101, "value": "v-1234567"}, "name"),
        ({"name": "Slack WEBHOOK", "value": "v-1234567"}, "name"),
        ({"name": "No value"}, "value"),
        ({"name": "Empty", "value": ""}, "value"),
        ({"name": "Huge", "value": "v" * 65_537}, "value"),
        ({"name": "Access", "value": "v-1234567", "access": "public"}, "access"),
        (
            {
                "name": "Level",
                "value": "v-1234567",
                "grants": [{"principal_type": "user", "principal_id": 1, "level": "owner"}],
            },
            "grants",
        ),
    ],
)
def test_create_with_bad_input_is_400_and_stores_nothing(personas: Personas, body, field):
    before = (SecretKey.objects.count(), AuditEvent.objects.count())
    response = api_client_for(personas.admin).post("/api/v1/secrets/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert response.json()["detail"]
    assert (SecretKey.objects.count(), AuditEvent.objects.count()) == before


def test_grant_to_principal_of_another_organization_is_400(personas: Personas):
    foreign_group = OrganizationGroupFactory(organization=personas.other_organization)
    client = api_client_for(personas.admin)
    for principal_type, principal_id in (
        ("user", personas.outsider.pk),
        ("group", foreign_group.pk),
    ):
        response = client.patch(
            f"/api/v1/secrets/{personas.restricted_key.pk}/",
            {
                "grants": [
                    {"principal_type": principal_type, "principal_id": principal_id, "level": "use"}
                ]
            },
            format="json",
        )
        assert response.status_code == 400
        assert "grants" in response.json()
    assert len(SecretKey.objects.with_grants().get(pk=personas.restricted_key.pk).grants) == 2


def test_patch_rename_keeps_value_and_version(personas: Personas):
    client = api_client_for(personas.member_manage)
    response = client.patch(
        f"/api/v1/secrets/{personas.restricted_key.pk}/", {"name": "Stripe prod"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["version"]) == ("Stripe prod", 1)
    key = SecretKey.objects.get(pk=personas.restricted_key.pk)
    assert key.value == RESTRICTED_VALUE
    assert key.version == 1


def test_patch_value_bumps_version(personas: Personas):
    client = api_client_for(personas.admin)
    response = client.patch(
        f"/api/v1/secrets/{personas.team_key.pk}/", {"value": "rotated-0001"}, format="json"
    )
    assert response.json()["version"] == 2
    assert "rotated-0001" not in response.content.decode()
    assert SecretKey.objects.get(pk=personas.team_key.pk).value == "rotated-0001"


def test_patch_any_combination(personas: Personas):
    client = api_client_for(personas.admin)
    response = client.patch(
        f"/api/v1/secrets/{personas.restricted_key.pk}/",
        {
            "access": "team",
            "grants": [
                {"principal_type": "user", "principal_id": personas.viewer.pk, "level": "use"}
            ],
        },
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["access"] == "team"
    assert [g["principal_name"] for g in response.json()["grants"]] == ["erin-viewer"]


def test_put_is_not_allowed(personas: Personas):
    response = api_client_for(personas.admin).put(
        f"/api/v1/secrets/{personas.team_key.pk}/", {"name": "x", "value": "y"}, format="json"
    )
    assert response.status_code == 405


def _grant(user, level: str) -> dict:
    return {"principal_type": "user", "principal_id": user.pk, "level": level}


def test_manager_who_drops_their_own_access_is_told_it_was_saved(personas: Personas):
    url = f"/api/v1/secrets/{personas.restricted_key.pk}/"
    client = api_client_for(personas.member_manage)

    # carol-manage keeps bob's grant and drops her own, and sets a (short) value with it.
    response = client.patch(
        url, {"grants": [_grant(personas.member_use, "use")], "value": "short"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json() == {
        "detail": "Saved. You no longer have access to this secret key.",
        "id": str(personas.restricted_key.pk),
        "can_use": False,
        "can_manage": False,
        "warnings": [
            "The value is shorter than 8 characters: run outputs cannot be redacted "
            "reliably for it, because such short text also occurs by chance."
        ],
    }
    assert "ETag" not in response
    assert "short" not in response.json()["detail"]
    # The change was written and audited; the key is now invisible to her.
    grants = SecretKey.objects.with_grants().get(pk=personas.restricted_key.pk).grants
    assert [(grant.principal_id, grant.level) for grant in grants] == [
        (personas.member_use.pk, "use")
    ]
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).version == 2
    events = AuditEvent.objects.filter(secret_key_id=personas.restricted_key.pk)
    assert {event.action for event in events if event.actor == personas.member_manage} == {
        "grants_changed",
        "value_updated",
    }
    assert client.get(url).status_code == 404


def test_manager_who_makes_a_key_restricted_without_themselves_is_told_it_was_saved(
    personas: Personas,
):
    # A Team key carol manages through a grant: she makes it Restricted and drops herself.
    url = f"/api/v1/secrets/{personas.team_key.pk}/"
    api_client_for(personas.admin).patch(
        url, {"grants": [_grant(personas.member_manage, "manage")]}, format="json"
    )

    response = api_client_for(personas.member_manage).patch(
        url, {"access": "restricted", "grants": []}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["detail"] == "Saved. You no longer have access to this secret key."
    assert (response.json()["can_use"], response.json()["can_manage"]) == (False, False)
    assert SecretKey.objects.get(pk=personas.team_key.pk).access == Access.RESTRICTED


@pytest.mark.parametrize(
    ("key_name", "grants"),
    [
        # Restricted: she turns her Manage grant into Use.
        ("restricted_key", lambda p: [_grant(p.member_use, "use"), _grant(p.member_manage, "use")]),
        # Team: she drops her Manage grant and keeps the Use every member has.
        ("team_key", lambda p: []),
    ],
)
def test_manager_who_drops_their_own_manage_gets_the_key_as_they_now_see_it(
    personas: Personas, key_name: str, grants
):
    secret_key = getattr(personas, key_name)
    url = f"/api/v1/secrets/{secret_key.pk}/"
    if key_name == "team_key":
        api_client_for(personas.admin).patch(
            url, {"grants": [_grant(personas.member_manage, "manage")]}, format="json"
        )
    client = api_client_for(personas.member_manage)

    response = client.patch(url, {"grants": grants(personas)}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == CONTRACT_FIELDS | {"warnings"}
    assert (body["id"], body["can_use"], body["can_manage"]) == (str(secret_key.pk), True, False)
    assert response["ETag"]
    # What she sees now is what a read shows her, and she may no longer write.
    assert client.get(url).json() == {
        key: value for key, value in body.items() if key != "warnings"
    }
    assert client.patch(url, {"name": "Mine"}, format="json").status_code == 403


def test_stale_if_match_is_412_and_changes_nothing(personas: Personas):
    url = f"/api/v1/secrets/{personas.restricted_key.pk}/"
    admin, manager = api_client_for(personas.admin), api_client_for(personas.member_manage)
    etag_admin = admin.get(url)["ETag"]
    etag_manager = manager.get(url)["ETag"]
    assert etag_admin == etag_manager

    # Both change the grants, each from what they read: the second must not win silently.
    first = admin.patch(
        url,
        {
            "grants": [
                {
                    "principal_type": "user",
                    "principal_id": personas.member_manage.pk,
                    "level": "manage",
                },
                {"principal_type": "group", "principal_id": personas.group.pk, "level": "use"},
            ]
        },
        format="json",
        HTTP_IF_MATCH=etag_admin,
    )
    assert first.status_code == 200
    assert first["ETag"] != etag_admin
    second = manager.patch(
        url,
        {
            "grants": [
                {
                    "principal_type": "user",
                    "principal_id": personas.member_manage.pk,
                    "level": "manage",
                }
            ]
        },
        format="json",
        HTTP_IF_MATCH=etag_manager,
    )
    assert second.status_code == 412
    assert "changed" in second.json()["detail"]
    grants = SecretKey.objects.with_grants().get(pk=personas.restricted_key.pk).grants
    assert {grant.principal_type for grant in grants} == {"user", "group"}

    # With the fresh ETag the manager's write goes through.
    fresh = manager.get(url)["ETag"]
    assert (
        manager.patch(url, {"name": "Merged"}, format="json", HTTP_IF_MATCH=fresh).status_code
        == 200
    )


def test_stale_if_match_on_delete_is_412(personas: Personas):
    url = f"/api/v1/secrets/{personas.team_key.pk}/"
    client = api_client_for(personas.admin)
    etag = client.get(url)["ETag"]
    client.patch(url, {"value": "changed-meanwhile"}, format="json")
    assert client.delete(url, HTTP_IF_MATCH=etag).status_code == 412
    assert SecretKey.objects.filter(pk=personas.team_key.pk).exists()
    assert client.delete(url, HTTP_IF_MATCH=client.get(url)["ETag"]).status_code == 204


def test_malformed_id_is_404(personas: Personas):
    response = api_client_for(personas.admin).get("/api/v1/secrets/not-a-uuid/")
    assert response.status_code == 404
    assert response.json()["detail"]


def test_audit_events_newest_first_and_filtered_by_secret(personas: Personas):
    client = api_client_for(personas.admin)
    client.patch(
        f"/api/v1/secrets/{personas.team_key.pk}/", {"name": "Slack alerts"}, format="json"
    )
    events = client.get("/api/v1/audit-events/").json()["results"]
    assert [event["action"] for event in events] == ["renamed", "created", "created"]
    filtered = client.get(f"/api/v1/audit-events/?secret={personas.restricted_key.pk}").json()
    assert [event["secret_name"] for event in filtered["results"]] == ["Stripe live"]
    assert client.get("/api/v1/audit-events/?secret=nope").status_code == 400


def _organization_with_many_keys(count: int):
    member = MembershipFactory()
    groups = [
        OrganizationGroupFactory(organization=member.organization, members=[member.user])
        for _ in range(3)
    ]
    for index, secret_key in enumerate(
        SecretKeyFactory.create_batch(
            count, organization=member.organization, access=Access.RESTRICTED
        )
    ):
        assign_perm("use_secretkey", member.user, secret_key)
        assign_perm("manage_secretkey", groups[index % 3].group, secret_key)
    return member.user


def test_list_query_count_does_not_grow_with_keys(db, django_assert_num_queries):
    for size in (10, 300):
        client = api_client_for(_organization_with_many_keys(size))
        # 1 token + user + membership, 2 count, 3 keys with can_use/can_manage,
        # 4 user grants, 5 group grants
        with django_assert_num_queries(5):
            response = client.get("/api/v1/secrets/?page_size=200")
        assert response.json()["count"] == size
