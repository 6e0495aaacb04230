"""The permission rules of DESIGN.md for the six personas, as one table."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from secretsapp import access, services
from secretsapp.models import (
    Access,
    AuditAction,
    AuditEvent,
    Role,
    SecretKey,
    SecretKeyGroupObjectPermission,
    SecretKeyUserObjectPermission,
)
from tests.conftest import PERSONA_NAMES, Personas
from tests.factories import OrganizationGroupFactory, UserFactory

OK, FORBIDDEN, NOT_FOUND = "ok", "403", "404"

# persona → (outcome of a Use, outcome of any Manage operation)
# Restricted key made by the admin; bob-use holds Use, carol-manage holds Manage.
RESTRICTED_RULES = {
    "admin": (OK, OK),
    "member_use": (OK, FORBIDDEN),
    "member_manage": (OK, OK),
    "member_nothing": (NOT_FOUND, NOT_FOUND),
    "viewer": (NOT_FOUND, NOT_FOUND),
    "outsider": (NOT_FOUND, NOT_FOUND),
}
# Team key made by the admin, no grants: every member may Use, only the admin Manage.
TEAM_RULES = {
    "admin": (OK, OK),
    "member_use": (OK, FORBIDDEN),
    "member_manage": (OK, FORBIDDEN),
    "member_nothing": (OK, FORBIDDEN),
    "viewer": (OK, FORBIDDEN),
    "outsider": (NOT_FOUND, NOT_FOUND),
}


def _use(user, secret_key: SecretKey) -> None:
    access.get_secret_for_user(user, secret_key.pk, need="use")


def _rename(user, secret_key: SecretKey) -> None:
    services.rename_secret_key(user, secret_key, "Renamed key")


def _update_value(user, secret_key: SecretKey) -> None:
    services.update_secret_value(user, secret_key, "a-brand-new-value-123")


def _change_grants(user, secret_key: SecretKey) -> None:
    services.change_secret_access(user, secret_key, access_level=Access.RESTRICTED, grants=[])


def _delete(user, secret_key: SecretKey) -> None:
    services.delete_secret_key(user, secret_key)


OPERATIONS: dict[str, tuple[str, Callable]] = {
    "use": ("use", _use),
    "rename": ("manage", _rename),
    "update_value": ("manage", _update_value),
    "change_grants": ("manage", _change_grants),
    "delete": ("manage", _delete),
}


def _outcome(operation: Callable, user, secret_key: SecretKey) -> str:
    try:
        operation(user, secret_key)
    except Http404:
        return NOT_FOUND
    except PermissionDenied:
        return FORBIDDEN
    return OK


def _snapshot(secret_key_id) -> tuple | None:
    secret_key = SecretKey.objects.with_grants().filter(pk=secret_key_id).first()
    if secret_key is None:
        return None
    secret_key.refresh_from_db(fields=["value"])
    return (
        secret_key.name,
        secret_key.value,
        secret_key.version,
        secret_key.access,
        sorted(secret_key.grants, key=repr),
    )


@pytest.mark.parametrize("key_kind", ["restricted", "team"])
@pytest.mark.parametrize("operation_name", list(OPERATIONS))
@pytest.mark.parametrize("persona", PERSONA_NAMES)
def test_permission_matrix(personas: Personas, persona: str, operation_name: str, key_kind: str):
    rules = RESTRICTED_RULES if key_kind == "restricted" else TEAM_RULES
    secret_key = personas.restricted_key if key_kind == "restricted" else personas.team_key
    need, operation = OPERATIONS[operation_name]
    expected = rules[persona][0 if need == "use" else 1]
    before = _snapshot(secret_key.pk)

    outcome = _outcome(operation, personas.by_name(persona), secret_key)

    assert outcome == expected
    after = _snapshot(secret_key.pk)
    if outcome != OK or operation_name == "use":
        assert after == before, "a refused operation changed the key"
    elif operation_name == "delete":
        assert after is None
    else:
        assert after != before


@pytest.mark.parametrize("persona", PERSONA_NAMES)
def test_usable_and_managed_lists_follow_the_rules(personas: Personas, persona: str):
    user = personas.by_name(persona)
    keys = {key.name: (key.can_use, key.can_manage) for key in SecretKey.objects.for_user(user)}
    expected = {}
    for secret_key, rules in (
        (personas.restricted_key, RESTRICTED_RULES),
        (personas.team_key, TEAM_RULES),
    ):
        use, manage = rules[persona]
        if use == OK:
            expected[secret_key.name] = (True, manage == OK)
    assert keys == expected
    managed = set(SecretKey.objects.managed_by(user).values_list("name", flat=True))
    assert managed == {name for name, (_, can_manage) in expected.items() if can_manage}


def test_member_with_use_gets_403_and_the_denial_is_audited(personas: Personas):
    with pytest.raises(PermissionDenied):
        access.get_secret_for_user(personas.member_use, personas.restricted_key.pk, "manage")
    event = AuditEvent.objects.get(action=AuditAction.DENIED)
    assert event.actor == personas.member_use
    assert event.secret_key_id == personas.restricted_key.pk


def test_malformed_key_id_is_404(personas: Personas):
    with pytest.raises(Http404):
        access.get_secret_for_user(personas.admin, "not-a-uuid")


def test_creator_manages_own_restricted_key(personas: Personas):
    secret_key = services.create_secret_key(
        personas.member_nothing, name="Mine", value="my-own-value-1", access_level="restricted"
    )
    assert access.can_manage(personas.member_nothing, secret_key)
    assert not access.can_use(personas.member_use, secret_key)
    # Admins always Manage, even keys they were never granted.
    assert access.can_manage(personas.admin, secret_key)


def test_group_grants_give_use_and_manage_to_its_members(personas: Personas):
    group = personas.group
    group.group.user_set.add(personas.member_nothing)
    key = personas.restricted_key
    assert not access.can_use(personas.member_nothing, key)

    services.change_secret_access(
        personas.admin,
        key,
        grants=[*key.grants, {"principal_type": "group", "principal_id": group.pk, "level": "use"}],
    )
    assert access.can_use(personas.member_nothing, key)
    assert not access.can_manage(personas.member_nothing, key)

    grants = [grant for grant in SecretKey.objects.with_grants().get(pk=key.pk).grants]
    grants = [g for g in grants if g.principal_type == "user"] + [
        {"principal_type": "group", "principal_id": group.pk, "level": "manage"}
    ]
    services.change_secret_access(personas.admin, key, grants=grants)
    assert access.can_manage(personas.member_nothing, key)

    # Leaving the group takes the right away.
    group.group.user_set.remove(personas.member_nothing)
    assert not access.can_use(personas.member_nothing, key)


def test_group_of_another_organization_grants_nothing(personas: Personas):
    foreign_group = OrganizationGroupFactory(
        organization=personas.other_organization, members=[personas.member_nothing]
    )
    with pytest.raises(Exception, match="no group"):
        services.change_secret_access(
            personas.admin,
            personas.restricted_key,
            grants=[{"principal_type": "group", "principal_id": foreign_group.pk, "level": "use"}],
        )
    assert not access.can_use(personas.member_nothing, personas.restricted_key)


def test_switching_access_back_and_forth(personas: Personas):
    key = personas.restricted_key
    assert not access.can_use(personas.member_nothing, key)
    services.change_secret_access(personas.admin, key, access_level=Access.TEAM)
    assert access.can_use(personas.member_nothing, key)
    assert access.can_use(personas.viewer, key)
    # Under Team access a Manage grant still adds Manage, a Use grant adds nothing more.
    assert access.can_manage(personas.member_manage, key)
    assert not access.can_manage(personas.member_use, key)
    services.change_secret_access(personas.admin, key, access_level=Access.RESTRICTED)
    assert not access.can_use(personas.member_nothing, key)
    assert not access.can_use(personas.viewer, key)
    # Grants survived both switches.
    assert access.can_use(personas.member_use, key)
    assert access.can_manage(personas.member_manage, key)


def test_viewer_is_capped_at_use(personas: Personas):
    key = personas.restricted_key
    # Direct Manage grants to viewers are refused outright...
    with pytest.raises(Exception, match="viewers can be granted Use only"):
        services.change_secret_access(
            personas.admin,
            key,
            grants=[
                {"principal_type": "user", "principal_id": personas.viewer.pk, "level": "manage"}
            ],
        )
    # ...and a Manage grant through a group gives a viewer Use only.
    group = personas.group
    group.group.user_set.add(personas.viewer)
    services.change_secret_access(
        personas.admin,
        key,
        grants=[{"principal_type": "group", "principal_id": group.pk, "level": "manage"}],
    )
    assert access.can_use(personas.viewer, key)
    assert not access.can_manage(personas.viewer, key)


def test_demoting_to_viewer_turns_manage_grants_into_use(personas: Personas):
    membership = personas.member_manage.membership
    services.change_role(personas.admin, membership, Role.VIEWER)
    key = SecretKey.objects.with_grants().get(pk=personas.restricted_key.pk)
    levels = {grant.principal_id: grant.level for grant in key.grants}
    assert levels[personas.member_manage.pk] == "use"
    assert access.can_use(personas.member_manage, key)
    assert not access.can_manage(personas.member_manage, key)


def test_deleting_a_key_deletes_its_grants(personas: Personas):
    key = personas.restricted_key
    services.change_secret_access(
        personas.admin,
        key,
        grants=[
            *key.grants,
            {"principal_type": "group", "principal_id": personas.group.pk, "level": "use"},
        ],
    )
    assert key.user_grants.count() == 2
    assert key.group_grants.count() == 1
    services.delete_secret_key(personas.admin, key)
    assert not SecretKeyUserObjectPermission.objects.exists()
    assert not SecretKeyGroupObjectPermission.objects.exists()


def test_removed_member_loses_access_and_grants(personas: Personas):
    services.remove_member(personas.admin, personas.member_use.membership)
    personas.member_use.refresh_from_db()
    assert not personas.member_use.is_active
    assert not access.can_use(personas.member_use, personas.restricted_key)
    key = SecretKey.objects.with_grants().get(pk=personas.restricted_key.pk)
    assert personas.member_use.pk not in {grant.principal_id for grant in key.grants}
    event = AuditEvent.objects.filter(action=AuditAction.GRANTS_CHANGED).get()
    assert event.changes["removed"][0]["principal_id"] == personas.member_use.pk


def test_superuser_without_membership_uses_nothing_but_may_manage_in_admin(personas: Personas):
    superuser = UserFactory(is_superuser=True, is_staff=True)
    assert list(SecretKey.objects.for_user(superuser)) == []
    assert access.can_manage(superuser, personas.restricted_key)
