"""Bad input is a clear validation error and changes nothing; members and groups services."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404

from secretsapp import services
from secretsapp.models import (
    VALUE_MAX_LENGTH,
    AuditEvent,
    Membership,
    OrganizationGroup,
    Role,
    SecretKey,
)
from tests.conftest import Personas
from tests.factories import PASSWORD, MembershipFactory


def _state() -> tuple:
    return (
        list(SecretKey.objects.order_by("name").values_list("name", "access", "version")),
        AuditEvent.objects.count(),
    )


@pytest.mark.parametrize(
    ("fields", "error_field", "message"),
    [
        ({"name": ""}, "name", "Enter a name"),
        ({"name": "   "}, "name", "Enter a name"),
        ({"name": "x" * 101}, "name", "at most 100"),
        ({"name": "line\nbreak"}, "name", "control characters"),
        ({"name": "STRIPE LIVE"}, "name", "already exists"),
        ({"value": ""}, "value", "Enter a value"),
        ({"value": "v" * (VALUE_MAX_LENGTH + 1)}, "value", "at most 65,536"),
        ({"access_level": "public"}, "access", "Choose one of"),
        (
            {"grants": [{"principal_type": "robot", "principal_id": 1, "level": "use"}]},
            "grants",
            "",
        ),
        ({"grants": [{"principal_type": "user", "principal_id": 1, "level": "own"}]}, "grants", ""),
        (
            {"grants": [{"principal_type": "user", "principal_id": "1", "level": "use"}]},
            "grants",
            "",
        ),
    ],
)
def test_create_rejects_bad_input_and_changes_nothing(personas, fields, error_field, message):
    before = _state()
    arguments = {"name": "New key", "value": "a-good-value-123", **fields}
    with pytest.raises(ValidationError) as raised:
        services.create_secret_key(personas.member_use, **arguments)
    assert error_field in raised.value.message_dict
    assert message in " ".join(raised.value.message_dict[error_field])
    assert _state() == before


def test_all_errors_are_reported_together(personas: Personas):
    with pytest.raises(ValidationError) as raised:
        services.create_secret_key(personas.admin, name="", value="", access_level="nope")
    assert set(raised.value.message_dict) == {"name", "value", "access"}


def test_grant_to_user_of_another_organization_is_refused(personas: Personas):
    before = _state()
    with pytest.raises(ValidationError, match="no user"):
        services.create_secret_key(
            personas.admin,
            name="Cross org",
            value="value-1234567",
            grants=[
                {"principal_type": "user", "principal_id": personas.outsider.pk, "level": "use"}
            ],
        )
    assert _state() == before


def test_duplicate_grant_is_refused(personas: Personas):
    grant = {"principal_type": "user", "principal_id": personas.member_use.pk, "level": "use"}
    with pytest.raises(ValidationError, match="listed twice"):
        services.create_secret_key(
            personas.admin, name="Twice", value="value-1234567", grants=[grant, grant]
        )


def test_update_with_one_bad_field_changes_nothing(personas: Personas):
    key = personas.restricted_key
    before = _state()
    with pytest.raises(ValidationError):
        services.update_secret_key(personas.admin, key, name="Fresh name", value="")
    assert _state() == before
    assert SecretKey.objects.get(pk=key.pk).value == "restricted-value-Zq8#not-for-eyes"


def test_rename_keeps_value_and_version(personas: Personas):
    key = services.rename_secret_key(personas.admin, personas.restricted_key, "  Stripe prod  ")
    key = SecretKey.objects.get(pk=key.pk)
    assert key.name == "Stripe prod"
    assert key.version == 1
    assert key.value == "restricted-value-Zq8#not-for-eyes"


def test_rename_to_same_name_in_other_case_is_allowed(personas: Personas):
    services.rename_secret_key(personas.admin, personas.restricted_key, "STRIPE LIVE")
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).name == "STRIPE LIVE"


def test_update_value_bumps_version_and_timestamps(personas: Personas):
    key = personas.restricted_key
    before = SecretKey.objects.get(pk=key.pk)
    services.update_secret_value(personas.member_manage, key, "second-value-000")
    after = SecretKey.objects.get(pk=key.pk)
    assert after.version == 2
    assert after.value == "second-value-000"
    assert after.value_updated_at > before.value_updated_at
    assert after.updated_at > before.updated_at
    assert after.created_at == before.created_at


def test_same_key_name_in_two_organizations_is_fine(personas: Personas):
    services.create_secret_key(personas.outsider, name="Stripe live", value="other-org-value")
    assert SecretKey.objects.filter(name="Stripe live").count() == 2


def test_viewer_cannot_create_keys(personas: Personas):
    with pytest.raises(PermissionDenied):
        services.create_secret_key(personas.viewer, name="Nope", value="value-1234567")


def test_user_without_organization_cannot_create_keys(db):
    from tests.factories import UserFactory

    with pytest.raises(Http404):
        services.create_secret_key(UserFactory(), name="Nope", value="value-1234567")


# --- members ---------------------------------------------------------------------------


def test_add_member_and_staff_follows_admin_role(personas: Personas):
    membership = services.add_member(
        personas.admin,
        personas.organization,
        username="frank",
        email="frank@example.com",
        password=PASSWORD,
        role=Role.MEMBER,
    )
    user = membership.user
    assert not user.is_staff
    assert user.check_password(PASSWORD)
    services.change_role(personas.admin, membership, Role.ADMIN)
    user.refresh_from_db()
    assert user.is_staff
    services.change_role(personas.admin, membership, Role.VIEWER)
    user.refresh_from_db()
    assert not user.is_staff


def test_add_member_validates(personas: Personas):
    with pytest.raises(ValidationError) as raised:
        services.add_member(
            personas.admin,
            personas.organization,
            username="bob-use",
            email="not-an-email",
            password="x",
            role="owner",
        )
    assert set(raised.value.message_dict) == {"username", "email", "role"}


def test_weak_password_is_refused(personas: Personas):
    with pytest.raises(ValidationError) as raised:
        services.add_member(
            personas.admin,
            personas.organization,
            username="gina",
            email="gina@example.com",
            password="password",
        )
    assert "password" in raised.value.message_dict


@pytest.mark.parametrize("persona", ["member_manage", "viewer"])
def test_only_admins_manage_members(personas: Personas, persona: str):
    with pytest.raises(PermissionDenied):
        services.add_member(
            personas.by_name(persona),
            personas.organization,
            username="henry",
            email="henry@example.com",
            password=PASSWORD,
        )


def test_admin_of_another_organization_cannot_add_members(personas: Personas):
    with pytest.raises(Http404):
        services.change_role(personas.outsider, personas.member_use.membership, Role.ADMIN)


def test_last_admin_cannot_be_demoted_or_removed(personas: Personas):
    membership = personas.admin.membership
    with pytest.raises(ValidationError, match="at least one admin"):
        services.change_role(personas.admin, membership, Role.MEMBER)
    with pytest.raises(ValidationError, match="at least one admin"):
        services.remove_member(personas.admin, membership)
    second = MembershipFactory(organization=personas.organization, role=Role.ADMIN)
    services.change_role(second.user, membership, Role.MEMBER)
    assert Membership.objects.get(pk=membership.pk).role == Role.MEMBER


def test_remove_member_takes_them_out_of_groups(personas: Personas):
    personas.group.group.user_set.add(personas.member_use)
    services.remove_member(personas.admin, personas.member_use.membership)
    assert not personas.group.group.user_set.filter(pk=personas.member_use.pk).exists()
    assert not Membership.objects.filter(user=personas.member_use).exists()


def test_create_organization_makes_a_staff_admin(db):
    organization = services.create_organization(
        "Initech",
        admin_username="peter",
        admin_email="peter@initech.example",
        admin_password=PASSWORD,
    )
    membership = Membership.objects.get(organization=organization)
    assert membership.role == Role.ADMIN
    assert membership.user.is_staff
    with pytest.raises(ValidationError, match="already exists"):
        services.create_organization(
            "INITECH",
            admin_username="bill",
            admin_email="bill@initech.example",
            admin_password=PASSWORD,
        )


# --- groups ----------------------------------------------------------------------------


def test_create_and_edit_group(personas: Personas):
    group = services.create_group(
        personas.admin, personas.organization, name="Payments", members=[personas.member_use.pk]
    )
    assert list(group.group.user_set.all()) == [personas.member_use]
    services.update_group(
        personas.admin,
        group,
        name="Payments team",
        members=[personas.member_nothing, personas.viewer],
    )
    group.refresh_from_db()
    assert group.name == "Payments team"
    assert set(group.group.user_set.all()) == {personas.member_nothing, personas.viewer}


def test_group_names_are_unique_per_organization(personas: Personas):
    with pytest.raises(ValidationError, match="already exists"):
        services.create_group(personas.admin, personas.organization, name="platform")
    # Another organization may use the same name.
    services.create_group(personas.outsider, personas.other_organization, name="Platform")
    assert OrganizationGroup.objects.filter(name="Platform").count() == 2


def test_group_members_must_belong_to_the_organization(personas: Personas):
    with pytest.raises(ValidationError, match="Not members"):
        services.create_group(
            personas.admin, personas.organization, name="Mixed", members=[personas.outsider.pk]
        )
    assert not OrganizationGroup.objects.filter(name="Mixed").exists()


def test_deleting_a_group_removes_its_grants_and_audits(personas: Personas):
    key = personas.restricted_key
    services.change_secret_access(
        personas.admin,
        key,
        grants=[{"principal_type": "group", "principal_id": personas.group.pk, "level": "use"}],
    )
    services.delete_group(personas.admin, personas.group)
    assert not key.group_grants.exists()
    assert AuditEvent.objects.filter(action="grants_changed").count() == 2


def test_members_cannot_manage_groups(personas: Personas):
    with pytest.raises(PermissionDenied):
        services.create_group(personas.member_manage, personas.organization, name="Rogue")


def test_write_with_stale_etag_is_refused(personas: Personas):
    key = SecretKey.objects.get(pk=personas.restricted_key.pk)
    read_etag = key.etag
    services.rename_secret_key(personas.admin, key, "Renamed meanwhile")
    with pytest.raises(services.StaleWrite):
        services.update_secret_key(
            personas.member_manage, key, access_level="team", expected_etag=read_etag
        )
    current = SecretKey.objects.get(pk=key.pk)
    assert current.access == "restricted"
    services.update_secret_key(personas.admin, key, access_level="team", expected_etag=current.etag)


def test_rename_changes_etag_but_not_version(personas: Personas):
    key = SecretKey.objects.get(pk=personas.restricted_key.pk)
    renamed = services.rename_secret_key(personas.admin, key, "Another name")
    assert renamed.version == key.version
    assert renamed.etag != key.etag


def test_removing_a_member_changes_the_etag_of_keys_they_held(personas: Personas):
    before = SecretKey.objects.get(pk=personas.restricted_key.pk).etag
    services.remove_member(personas.admin, personas.member_use.membership)
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).etag != before
