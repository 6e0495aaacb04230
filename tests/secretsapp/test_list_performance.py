"""The picker and GET /api/v1/secrets/ cost the same queries for a few keys or hundreds.

Organizations are seeded like the benchmark's (bench/run.py): half Team and half
Restricted keys, the member granted Use on every third key, a group granted on every key
and Manage on every fifth.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from rest_framework import serializers

from secretsapp.api.serializers import SecretKeySerializer
from secretsapp.audit import record_key_uses
from secretsapp.models import (
    Access,
    OrganizationGroup,
    Role,
    SecretKey,
    SecretKeyGroupObjectPermission,
    SecretKeyUserObjectPermission,
)
from tests.conftest import Personas, api_client_for
from tests.factories import MembershipFactory, OrganizationGroupFactory

PAGE_SIZE = 50


@dataclass
class Seeded:
    member: object
    groups: list[OrganizationGroup]
    visible: list[str]  # names of the keys the member may Use, in name order
    managed: set[str]  # names of the keys the member may Manage


def _organization(keys: int, groups: int) -> Seeded:
    member = MembershipFactory(role=Role.MEMBER).user
    organization = member.membership.organization
    other = MembershipFactory(organization=organization).user
    # The member is in every other group; the rest belong to someone else.
    group_rows = [
        OrganizationGroupFactory(
            organization=organization, members=[member if index % 2 else other]
        )
        for index in range(groups)
    ]
    secret_keys = SecretKey.objects.bulk_create(
        SecretKey(
            organization=organization,
            name=f"Key {index:04d}",
            value=f"list-performance-value-{index:04d}",
            access=Access.RESTRICTED if index % 2 else Access.TEAM,
        )
        for index in range(keys)
    )
    use = Permission.objects.get(codename="use_secretkey")
    manage = Permission.objects.get(codename="manage_secretkey")
    SecretKeyUserObjectPermission.objects.bulk_create(
        SecretKeyUserObjectPermission(content_object=secret_key, user=member, permission=use)
        for index, secret_key in enumerate(secret_keys)
        if index % 3 == 0
    )
    SecretKeyGroupObjectPermission.objects.bulk_create(
        SecretKeyGroupObjectPermission(
            content_object=secret_key,
            group=group_rows[index % groups].group,
            permission=manage if index % 5 == 0 else use,
        )
        for index, secret_key in enumerate(secret_keys)
    )

    def in_members_group(index: int) -> bool:
        return (index % groups) % 2 == 1

    visible = [
        secret_key.name
        for index, secret_key in enumerate(secret_keys)
        if index % 2 == 0 or index % 3 == 0 or in_members_group(index)
    ]
    managed = {
        secret_key.name
        for index, secret_key in enumerate(secret_keys)
        if index % 5 == 0 and in_members_group(index)
    }
    return Seeded(member, group_rows, visible, managed)


@pytest.fixture
def few(db) -> Seeded:
    return _organization(keys=6, groups=2)


@pytest.fixture
def many(db) -> Seeded:
    return _organization(keys=300, groups=20)


def test_picker_costs_the_same_queries_for_few_or_many_keys(
    client, few: Seeded, many: Seeded, django_assert_num_queries
):
    for seeded in (few, many):
        client.force_login(seeded.member)
        # 1 session, 2 user, 3 membership, 4 the first 51 keys by name (id, name, access)
        with django_assert_num_queries(4):
            response = client.get("/keys/picker/")
        html = response.content.decode()
        shown = seeded.visible[:PAGE_SIZE]
        assert html.count('role="menuitem"') == len(shown)
        assert all(f'data-key-name="{name}"' in html for name in shown)
        assert ("first 50" in html) == (len(seeded.visible) > PAGE_SIZE)
    assert '<span class="badge restricted">Restricted</span>' in html
    assert '<span class="badge team">Team</span>' in html


def test_picker_search_costs_the_same_queries(client, many: Seeded, django_assert_num_queries):
    client.force_login(many.member)
    with django_assert_num_queries(4):
        html = client.get("/keys/picker/?q=key 001").content.decode()
    expected = [name for name in many.visible if name.startswith("Key 001")]
    assert html.count('role="menuitem"') == len(expected) > 0


def test_secret_list_costs_the_same_queries_for_few_or_many_keys(
    few: Seeded, many: Seeded, django_assert_num_queries
):
    for seeded in (few, many):
        client = api_client_for(seeded.member)
        # 1 token with user and membership, 2 count, 3 the page of keys with
        # can_use/can_manage, 4 their user grants, 5 their group grants
        with django_assert_num_queries(5):
            body = client.get("/api/v1/secrets/").json()
        assert body["count"] == len(seeded.visible)
        page = body["results"]
        assert [item["name"] for item in page] == seeded.visible[:PAGE_SIZE]
        assert {item["name"] for item in page if item["can_manage"]} == {
            name for name in seeded.visible[:PAGE_SIZE] if name in seeded.managed
        }
        assert all(item["can_use"] for item in page)


def test_secret_list_shows_grants_of_users_then_groups(many: Seeded):
    body = api_client_for(many.member).get("/api/v1/secrets/").json()
    first = body["results"][0]
    assert first["name"] == "Key 0000"
    assert first["grants"] == [
        {
            "principal_type": "user",
            "principal_id": many.member.pk,
            "principal_name": many.member.username,
            "level": "use",
        },
        {
            "principal_type": "group",
            "principal_id": many.groups[0].pk,
            "principal_name": many.groups[0].name,
            "level": "manage",
        },
    ]


@pytest.mark.parametrize("persona", ["admin", "member_use", "member_manage", "viewer"])
def test_key_representation_is_what_drf_would_build(personas: Personas, persona: str):
    # SecretKeySerializer builds its payload directly for speed; it must not drift from
    # the declared fields.
    used = personas.restricted_key
    record_key_uses(
        personas.admin, used.organization_id, {used.pk: used.name}, uuid.uuid4(), used.created_at
    )
    user = personas.by_name(persona)
    keys = SecretKey.objects.for_user(user).with_grants().order_by("name")
    assert keys
    for secret_key in keys:
        serializer = SecretKeySerializer(secret_key)
        generic = serializers.Serializer.to_representation(serializer, secret_key)
        assert serializer.data == generic
        assert list(serializer.data) == list(generic)
