"""Django's ``user.has_perm(perm, secret_key)`` gives the answers of ``secretsapp.access``.

A maintainer's natural question goes through ``secretsapp.backends.AccessBackend``, so it
knows Team access, admins, creators, group grants and the viewers' cap, which guardian's
own backend (grant rows only) did not. The truth table is written out: the test compares
Django's answer with the table and with ``access`` for every persona, key and permission.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from secretsapp import access, services
from secretsapp.backends import AccessBackend
from secretsapp.models import Access, SecretKey
from tests.conftest import PERSONA_NAMES, Personas
from tests.factories import UserFactory

USE = "secretsapp.use_secretkey"
VIEW = "secretsapp.view_secretkey"
MANAGE = "secretsapp.manage_secretkey"
CHANGE = "secretsapp.change_secretkey"
DELETE = "secretsapp.delete_secretkey"
ADD = "secretsapp.add_secretkey"
PERMISSIONS = [USE, VIEW, MANAGE, CHANGE, DELETE, ADD]
# Which of access's two answers each permission asks; add_secretkey has no per-object answer.
RIGHT_OF = {USE: "use", VIEW: "use", MANAGE: "manage", CHANGE: "manage", DELETE: "manage"}

USE_ONLY, USE_AND_MANAGE, NOTHING = (True, False), (True, True), (False, False)

# key → persona → (may Use, may Manage)
TRUTH = {
    # By the admin; bob-use is granted Use, carol-manage Manage.
    "restricted": {
        "admin": USE_AND_MANAGE,
        "member_use": USE_ONLY,
        "member_manage": USE_AND_MANAGE,
        "member_nothing": NOTHING,
        "viewer": NOTHING,
        "outsider": NOTHING,
    },
    # By the admin, no grants: every member Uses, only the admin Manages.
    "team": {
        "admin": USE_AND_MANAGE,
        "member_use": USE_ONLY,
        "member_manage": USE_ONLY,
        "member_nothing": USE_ONLY,
        "viewer": USE_ONLY,
        "outsider": NOTHING,
    },
    # Restricted, made by bob-use, no grants: the creator Manages, and the admin.
    "created_by_member": {
        "admin": USE_AND_MANAGE,
        "member_use": USE_AND_MANAGE,
        "member_manage": NOTHING,
        "member_nothing": NOTHING,
        "viewer": NOTHING,
        "outsider": NOTHING,
    },
    # Restricted, Manage granted to the group of dave-nothing and erin-viewer: the viewer
    # is capped at Use.
    "group_grant": {
        "admin": USE_AND_MANAGE,
        "member_use": NOTHING,
        "member_manage": NOTHING,
        "member_nothing": USE_AND_MANAGE,
        "viewer": USE_ONLY,
        "outsider": NOTHING,
    },
    # A Team key of the other organization, made by its admin (the outsider).
    "other_organization": {
        "admin": NOTHING,
        "member_use": NOTHING,
        "member_manage": NOTHING,
        "member_nothing": NOTHING,
        "viewer": NOTHING,
        "outsider": USE_AND_MANAGE,
    },
}


def _expected(truth: tuple[bool, bool], perm: str) -> bool:
    right = RIGHT_OF.get(perm)
    if right is None:
        return False
    return truth[0] if right == "use" else truth[1]


def _access_answer(user: AbstractBaseUser, secret_key: SecretKey, perm: str) -> bool:
    right = RIGHT_OF.get(perm)
    if right is None:
        return False
    return (
        access.can_use(user, secret_key) if right == "use" else access.can_manage(user, secret_key)
    )


@pytest.fixture
def keys(personas: Personas) -> dict[str, SecretKey]:
    personas.group.group.user_set.add(personas.member_nothing, personas.viewer)
    return {
        "restricted": personas.restricted_key,
        "team": personas.team_key,
        "created_by_member": services.create_secret_key(
            personas.member_use,
            name="Bob's own",
            value="bob-own-value-123",
            access_level=Access.RESTRICTED,
        ),
        "group_grant": services.create_secret_key(
            personas.admin,
            name="Platform deploy",
            value="platform-value-123",
            access_level=Access.RESTRICTED,
            grants=[
                {"principal_type": "group", "principal_id": personas.group.pk, "level": "manage"}
            ],
        ),
        "other_organization": services.create_secret_key(
            personas.outsider, name="Globex key", value="globex-value-123"
        ),
    }


def _fresh(user: AbstractBaseUser) -> AbstractBaseUser:
    """The user as a request would load it: no cached permissions or membership."""
    return get_user_model().objects.get(pk=user.pk)


@pytest.mark.parametrize("key_name", list(TRUTH))
@pytest.mark.parametrize("persona", PERSONA_NAMES)
def test_has_perm_matches_access_and_the_truth_table(
    personas: Personas, keys: dict[str, SecretKey], persona: str, key_name: str
):
    user = _fresh(personas.by_name(persona))
    secret_key = SecretKey.objects.get(pk=keys[key_name].pk)
    truth = TRUTH[key_name][persona]

    for perm in PERMISSIONS:
        answer = user.has_perm(perm, secret_key)
        assert answer == _expected(truth, perm), (persona, key_name, perm)
        assert answer == _access_answer(user, secret_key, perm), (persona, key_name, perm)


@pytest.mark.parametrize("key_name", list(TRUTH))
@pytest.mark.parametrize("persona", PERSONA_NAMES)
def test_all_permissions_of_a_key_are_those_has_perm_grants(
    personas: Personas, keys: dict[str, SecretKey], persona: str, key_name: str
):
    user = _fresh(personas.by_name(persona))
    truth = TRUTH[key_name][persona]
    expected = {perm for perm in PERMISSIONS if _expected(truth, perm)}

    assert user.get_all_permissions(keys[key_name]) == expected


def test_an_annotated_key_of_another_user_is_asked_afresh(personas: Personas):
    # A key read through for_user(admin) carries can_manage=True: that is the admin's
    # answer, not bob's.
    admins_view = SecretKey.objects.for_user(personas.admin).get(pk=personas.restricted_key.pk)
    assert admins_view.can_manage
    member_use = _fresh(personas.member_use)

    assert member_use.has_perm(USE, admins_view)
    assert not member_use.has_perm(MANAGE, admins_view)


@pytest.mark.parametrize("key_name", list(TRUTH))
def test_a_superuser_may_do_everything_as_access_says(
    personas: Personas, keys: dict[str, SecretKey], key_name: str
):
    superuser = UserFactory(username="root", is_superuser=True, is_staff=True)

    for perm in (USE, VIEW, MANAGE, CHANGE, DELETE):
        assert superuser.has_perm(perm, keys[key_name])
        assert _access_answer(superuser, keys[key_name], perm)


@pytest.mark.parametrize("key_name", list(TRUTH))
@pytest.mark.parametrize("persona", ["admin", "member_manage", "outsider"])
def test_an_inactive_user_may_do_nothing(
    personas: Personas, keys: dict[str, SecretKey], persona: str, key_name: str
):
    user = _fresh(personas.by_name(persona))
    user.is_active = False
    user.save(update_fields=["is_active"])

    for perm in PERMISSIONS:
        assert not user.has_perm(perm, keys[key_name]), perm
        assert not _access_answer(user, keys[key_name], perm), perm


def test_an_inactive_superuser_may_do_nothing(personas: Personas):
    superuser = UserFactory(username="root", is_superuser=True, is_staff=True, is_active=False)

    for perm in PERMISSIONS:
        assert not superuser.has_perm(perm, personas.team_key), perm
    assert not access.can_use(superuser, personas.team_key)


def test_other_objects_are_left_to_the_other_backends(personas: Personas):
    backend = AccessBackend()
    admin = _fresh(personas.admin)

    # An object it does not know, or none: False, so ModelBackend's answer stands alone.
    assert not backend.has_perm(admin, USE, personas.organization)
    assert not backend.has_perm(admin, USE, None)
    assert not backend.has_perm(admin, "secretsapp.use_secretkey_typo", personas.team_key)
    assert backend.get_all_permissions(admin, personas.organization) == set()
    assert not admin.has_perm(USE, personas.organization)


def test_has_perm_costs_one_query_and_none_for_what_it_does_not_answer(
    personas: Personas, django_assert_num_queries
):
    user = get_user_model().objects.select_related("membership").get(pk=personas.member_use.pk)
    secret_key = SecretKey.objects.get(pk=personas.restricted_key.pk)
    # ModelBackend's model-level permissions load once per user (2 queries, cached).
    user.has_perm(ADD)

    with django_assert_num_queries(1):  # the key's rights for the user (access.for_user)
        assert user.has_perm(USE, secret_key)
    with django_assert_num_queries(0):
        assert not user.has_perm(ADD, secret_key)
        assert not user.has_perm(USE, personas.organization)


def test_has_perm_of_a_deleted_key_is_false_and_raises_nothing(personas: Personas):
    secret_key = SecretKey.objects.get(pk=personas.team_key.pk)
    services.delete_secret_key(personas.admin, personas.team_key)

    assert not _fresh(personas.admin).has_perm(MANAGE, secret_key)
    assert not _fresh(personas.member_use).has_perm(USE, secret_key)
    assert not _fresh(personas.member_use).has_perm(USE, SecretKey(name="never saved"))
