"""The Django admin as organization admins and superusers use it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from secretsapp import services
from secretsapp.models import (
    Access,
    AuditAction,
    AuditEvent,
    Membership,
    Organization,
    OrganizationGroup,
    Role,
    SecretKey,
    SecretKeyGroupObjectPermission,
    SecretKeyUserObjectPermission,
)
from tests.conftest import RESTRICTED_VALUE, TEAM_VALUE
from tests.factories import PASSWORD, UserFactory

User = get_user_model()

FOREIGN_VALUE = "globex-value-Xw6!not-for-eyes"
NEW_VALUE = "rotated-value-Vv5%not-for-eyes"
ALL_VALUES = (RESTRICTED_VALUE, TEAM_VALUE, FOREIGN_VALUE, NEW_VALUE)


# --- Helpers -----------------------------------------------------------------------------


def admin_url(model_name: str, view: str, *args: Any) -> str:
    return reverse(f"admin:secretsapp_{model_name}_{view}", args=args)


def form_data(response: Any) -> dict[str, Any]:
    """The page's admin form and inline rows as a browser would post them back unchanged."""
    forms = [response.context["adminform"].form]
    for inline_admin_formset in response.context["inline_admin_formsets"]:
        formset = inline_admin_formset.formset
        forms += [formset.management_form, *formset.forms]
    data: dict[str, Any] = {}
    for form in forms:
        for field in form:
            value = field.value()
            if value is None or value is False:
                continue  # an unchecked checkbox or an empty select posts nothing
            if value is True:
                value = "on"
            if isinstance(value, list | tuple):
                data[field.html_name] = [str(item) for item in value]
            else:
                data[field.html_name] = str(value)
    return data


def formset_of(response: Any, model: type) -> Any:
    for inline_admin_formset in response.context["inline_admin_formsets"]:
        if inline_admin_formset.formset.model is model:
            return inline_admin_formset.formset
    raise AssertionError(f"No inline for {model.__name__} on the page.")


def add_row(data: dict[str, Any], prefix: str, **fields: object) -> None:
    index = int(data[f"{prefix}-TOTAL_FORMS"])
    data[f"{prefix}-TOTAL_FORMS"] = str(index + 1)
    for name, value in fields.items():
        data[f"{prefix}-{index}-{name}"] = str(value)


def delete_row(response: Any, data: dict[str, Any], model: type, **initial: object) -> None:
    """Tick DELETE on the row whose initial values match ``initial``."""
    formset = formset_of(response, model)
    for index, form in enumerate(formset.initial_forms):
        if all(form.initial.get(name) == value for name, value in initial.items()):
            data[f"{formset.prefix}-{index}-DELETE"] = "on"
            return
    raise AssertionError(f"No {model.__name__} row with {initial}.")


def grant_set(secret_key: SecretKey) -> set[tuple[str, int, str]]:
    fresh = SecretKey.objects.with_grants().get(pk=secret_key.pk)
    return {(grant.principal_type, grant.principal_id, grant.level) for grant in fresh.grants}


def stored_value(secret_key: SecretKey) -> str:
    return SecretKey.objects.get(pk=secret_key.pk).value


def assert_no_value(response: Any) -> None:
    content = response.content.decode()
    for value in ALL_VALUES:
        assert value not in content


# --- Fixtures ----------------------------------------------------------------------------


@pytest.fixture
def superuser(db) -> Any:
    return UserFactory(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def foreign_key(personas) -> SecretKey:
    """A key of the outsider's organization, with a group there."""
    services.create_group(personas.outsider, personas.other_organization, name="Globex Ops")
    return services.create_secret_key(personas.outsider, name="Globex API", value=FOREIGN_VALUE)


@pytest.fixture
def admin_client(client, personas) -> Any:
    client.force_login(personas.admin)
    return client


def key_change_page(client: Any, secret_key: SecretKey) -> Any:
    response = client.get(admin_url("secretkey", "change", secret_key.pk))
    assert response.status_code == 200
    return response


# --- Who gets in, and what they see -------------------------------------------------------


def test_member_is_redirected_to_login(client, personas):
    client.force_login(personas.member_manage)

    response = client.get(admin_url("secretkey", "changelist"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_org_admin_index_lists_organization_models_but_not_users_or_organizations(
    admin_client,
):
    response = admin_client.get(reverse("admin:index"))

    assert response.status_code == 200
    content = response.content.decode()
    for model_name in ("secretkey", "membership", "organizationgroup", "auditevent"):
        assert admin_url(model_name, "changelist") in content
    assert admin_url("organization", "changelist") not in content
    assert reverse("admin:auth_user_changelist") not in content
    assert admin_client.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert admin_client.get(admin_url("organization", "changelist")).status_code == 403


def test_org_admin_sees_only_own_keys_in_list(admin_client, personas, foreign_key):
    response = admin_client.get(admin_url("secretkey", "changelist"))

    assert response.status_code == 200
    assert set(response.context["cl"].result_list) == {personas.restricted_key, personas.team_key}
    assert "Globex API" not in response.content.decode()


def test_outsider_gets_404_on_every_page_of_a_foreign_key(client, personas):
    client.force_login(personas.outsider)
    secret_key = personas.restricted_key

    for view in ("change", "history", "delete"):
        assert client.get(admin_url("secretkey", view, secret_key.pk)).status_code == 404
    response = client.post(admin_url("secretkey", "change", secret_key.pk), {"name": "Mine now"})
    assert response.status_code == 404
    assert SecretKey.objects.get(pk=secret_key.pk).name == "Stripe live"


def test_outsider_does_not_see_foreign_keys_in_list(client, personas, foreign_key):
    client.force_login(personas.outsider)

    response = client.get(admin_url("secretkey", "changelist"))

    assert list(response.context["cl"].result_list) == [foreign_key]
    assert "Stripe live" not in response.content.decode()


def test_org_admin_lists_show_only_own_organization(admin_client, personas, foreign_key):
    members = admin_client.get(admin_url("membership", "changelist"))
    groups = admin_client.get(admin_url("organizationgroup", "changelist"))
    events = admin_client.get(admin_url("auditevent", "changelist"))

    assert {membership.user for membership in members.context["cl"].result_list} == {
        personas.admin,
        personas.member_use,
        personas.member_manage,
        personas.member_nothing,
        personas.viewer,
    }
    assert "mallory-outsider" not in members.content.decode()
    assert list(groups.context["cl"].result_list) == [personas.group]
    assert "Globex Ops" not in groups.content.decode()
    assert {event.secret_key_name for event in events.context["cl"].result_list} == {
        "Stripe live",
        "Slack webhook",
    }
    assert "Globex API" not in events.content.decode()


def test_org_admin_change_pages_render(admin_client, personas):
    membership = personas.member_use.membership
    event = AuditEvent.objects.filter(organization=personas.organization).first()

    for model_name, obj in (
        ("membership", membership),
        ("organizationgroup", personas.group),
        ("auditevent", event),
        ("secretkey", personas.restricted_key),
    ):
        response = admin_client.get(admin_url(model_name, "change", obj.pk))
        assert response.status_code == 200, model_name
    for model_name in ("membership", "organizationgroup", "secretkey"):
        assert admin_client.get(admin_url(model_name, "add")).status_code == 200, model_name


def test_outsider_gets_404_on_foreign_members_groups_and_events(client, personas):
    client.force_login(personas.outsider)
    event = AuditEvent.objects.filter(organization=personas.organization).first()

    for model_name, obj in (
        ("membership", personas.member_use.membership),
        ("organizationgroup", personas.group),
        ("auditevent", event),
    ):
        response = client.get(admin_url(model_name, "change", obj.pk))
        assert response.status_code == 404, model_name


def test_superuser_sees_every_organization(client, superuser, personas, foreign_key):
    client.force_login(superuser)

    keys = client.get(admin_url("secretkey", "changelist"))
    members = client.get(admin_url("membership", "changelist"))
    organizations = client.get(admin_url("organization", "changelist"))

    assert set(keys.context["cl"].result_list) == {
        personas.restricted_key,
        personas.team_key,
        foreign_key,
    }
    assert personas.outsider.membership in members.context["cl"].result_list
    assert set(organizations.context["cl"].result_list) == {
        personas.organization,
        personas.other_organization,
    }
    assert client.get(admin_url("secretkey", "change", foreign_key.pk)).status_code == 200


def test_key_list_costs_the_same_for_many_keys(admin_client, personas):
    url = admin_url("secretkey", "changelist")
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    for number in range(10):
        services.create_secret_key(
            personas.member_manage, name=f"Extra {number}", value=f"extra-{number}"
        )
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(url)

    assert len(response.context["cl"].result_list) == 12
    assert len(many) == len(few)


def test_key_list_queries(admin_client, personas, django_assert_num_queries):
    url = admin_url("secretkey", "changelist")
    admin_client.get(url)  # warm up the content-type cache
    # 1 session, 2 user, 3 membership (the permission checks), 4 count of the filtered
    # list, 5 count of all keys, 6-7 global permissions of the user and of their groups
    # (the sidebar asks the auth and token admins), 8 the page of keys with their creators.
    with django_assert_num_queries(8):
        admin_client.get(url)


# --- The value is never shown -------------------------------------------------------------


@pytest.mark.parametrize("persona", ["admin", "superuser"])
def test_no_key_page_shows_a_value_or_decrypts_one(
    client, personas, superuser, foreign_key, monkeypatch, persona
):
    client.force_login(superuser if persona == "superuser" else personas.admin)
    services.create_group(personas.admin, personas.organization, name="Ops")
    services.update_secret_key(
        personas.admin,
        personas.restricted_key,
        grants=[
            *personas.restricted_key.grants,
            {"principal_type": "group", "principal_id": personas.group.pk, "level": "use"},
        ],
    )
    admin_client_pages = [admin_url("secretkey", "changelist"), admin_url("secretkey", "add")]
    for secret_key in (personas.restricted_key, personas.team_key):
        admin_client_pages += [
            admin_url("secretkey", view, secret_key.pk) for view in ("change", "history", "delete")
        ]

    # The pages do not even need the values: decrypting one fails the test.
    def refuse_to_decrypt(value: str) -> str:
        raise AssertionError("An admin page decrypted a secret value.")

    monkeypatch.setattr("encrypted_model_fields.fields.decrypt_str", refuse_to_decrypt)
    for url in admin_client_pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_value(response)
    bulk = client.post(
        admin_url("secretkey", "changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [personas.restricted_key.pk, personas.team_key.pk],
        },
    )
    assert bulk.status_code == 200
    assert "Stripe live" in bulk.content.decode()
    assert_no_value(bulk)


def test_value_is_not_rendered_back_after_a_validation_error(admin_client, personas):
    response = key_change_page(admin_client, personas.restricted_key)
    data = form_data(response) | {"name": "", "new_value": NEW_VALUE}

    response = admin_client.post(admin_url("secretkey", "change", personas.restricted_key.pk), data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert_no_value(response)
    assert stored_value(personas.restricted_key) == RESTRICTED_VALUE


def test_key_form_has_no_value_field(admin_client, personas):
    for url in (
        admin_url("secretkey", "add"),
        admin_url("secretkey", "change", personas.team_key.pk),
    ):
        form = admin_client.get(url).context["adminform"].form
        assert "value" not in form.fields
        assert "new_value" in form.fields


# --- Changing a key -----------------------------------------------------------------------


def test_new_value_updates_value_and_bumps_version(admin_client, personas):
    secret_key = personas.restricted_key
    data = form_data(key_change_page(admin_client, secret_key)) | {"new_value": NEW_VALUE}

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 302
    assert stored_value(secret_key) == NEW_VALUE
    assert SecretKey.objects.get(pk=secret_key.pk).version == 2
    event = AuditEvent.objects.get(secret_key_id=secret_key.pk, action=AuditAction.VALUE_UPDATED)
    assert event.actor == personas.admin
    log_entry = LogEntry.objects.get(object_id=str(secret_key.pk))
    assert NEW_VALUE not in log_entry.change_message


def test_empty_new_value_keeps_value_and_version(admin_client, personas):
    secret_key = personas.team_key
    data = form_data(key_change_page(admin_client, secret_key)) | {"access": Access.RESTRICTED}
    assert not data.get("new_value")

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 302
    saved = SecretKey.objects.get(pk=secret_key.pk)
    assert (saved.value, saved.version, saved.access) == (TEAM_VALUE, 1, Access.RESTRICTED)
    assert not AuditEvent.objects.filter(
        secret_key_id=secret_key.pk, action=AuditAction.VALUE_UPDATED
    ).exists()
    assert AuditEvent.objects.filter(
        secret_key_id=secret_key.pk, action=AuditAction.ACCESS_CHANGED
    ).exists()


def test_rename_writes_renamed_event(admin_client, personas):
    secret_key = personas.team_key
    data = form_data(key_change_page(admin_client, secret_key)) | {"name": "Slack alerts"}

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 302
    assert SecretKey.objects.get(pk=secret_key.pk).name == "Slack alerts"
    event = AuditEvent.objects.get(secret_key_id=secret_key.pk, action=AuditAction.RENAMED)
    assert event.changes == {"name": {"from": "Slack webhook", "to": "Slack alerts"}}


def test_duplicate_name_shows_error_and_changes_nothing(admin_client, personas):
    secret_key = personas.team_key
    events_before = AuditEvent.objects.count()
    data = form_data(key_change_page(admin_client, secret_key)) | {
        "name": "stripe LIVE",
        "new_value": NEW_VALUE,
    }

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 200
    assert "already exists" in str(response.context["adminform"].form.errors["name"])
    assert "already exists" in response.content.decode()
    saved = SecretKey.objects.get(pk=secret_key.pk)
    assert (saved.name, saved.value, saved.version) == ("Slack webhook", TEAM_VALUE, 1)
    assert AuditEvent.objects.count() == events_before


def test_grants_set_via_inline_become_the_key_grants(admin_client, personas):
    secret_key = personas.restricted_key
    response = key_change_page(admin_client, secret_key)
    data = form_data(response)
    delete_row(response, data, SecretKeyUserObjectPermission, user=personas.member_use.pk)
    add_row(
        data,
        formset_of(response, SecretKeyUserObjectPermission).prefix,
        user=personas.member_nothing.pk,
        level="use",
    )
    add_row(
        data,
        formset_of(response, SecretKeyGroupObjectPermission).prefix,
        group=personas.group.group.pk,
        level="manage",
    )

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 302
    assert grant_set(secret_key) == {
        ("user", personas.member_manage.pk, "manage"),
        ("user", personas.member_nothing.pk, "use"),
        # Grants name the OrganizationGroup, not its auth group.
        ("group", personas.group.pk, "manage"),
    }
    event = AuditEvent.objects.get(secret_key_id=secret_key.pk, action=AuditAction.GRANTS_CHANGED)
    assert {grant["principal_id"] for grant in event.changes["removed"]} == {personas.member_use.pk}
    assert SecretKey.objects.get(pk=secret_key.pk).version == 1


def test_changing_a_grant_level_via_inline(admin_client, personas):
    secret_key = personas.restricted_key
    response = key_change_page(admin_client, secret_key)
    data = form_data(response)
    formset = formset_of(response, SecretKeyUserObjectPermission)
    index = next(
        index
        for index, form in enumerate(formset.initial_forms)
        if form.initial["user"] == personas.member_use.pk
    )
    assert data[f"{formset.prefix}-{index}-level"] == "use"
    data[f"{formset.prefix}-{index}-level"] = "manage"

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 302
    assert grant_set(secret_key) == {
        ("user", personas.member_use.pk, "manage"),
        ("user", personas.member_manage.pk, "manage"),
    }


def test_grant_to_user_of_another_organization_is_rejected(admin_client, personas):
    secret_key = personas.restricted_key
    grants_before = grant_set(secret_key)
    response = key_change_page(admin_client, secret_key)
    data = form_data(response) | {"name": "Renamed too"}
    add_row(
        data,
        formset_of(response, SecretKeyUserObjectPermission).prefix,
        user=personas.outsider.pk,
        level="use",
    )

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert grant_set(secret_key) == grants_before
    assert SecretKey.objects.get(pk=secret_key.pk).name == "Stripe live"


def test_grant_choices_are_the_organization_users_and_groups(admin_client, personas, foreign_key):
    response = key_change_page(admin_client, personas.restricted_key)
    users = formset_of(response, SecretKeyUserObjectPermission).empty_form.fields["user"]
    groups = formset_of(response, SecretKeyGroupObjectPermission).empty_form.fields["group"]

    assert {value for value, label in users.choices if value} == {
        personas.admin.pk,
        personas.member_use.pk,
        personas.member_manage.pk,
        personas.member_nothing.pk,
        personas.viewer.pk,
    }
    assert [label for value, label in groups.choices if value] == ["Platform"]


def test_service_grant_error_is_shown_and_nothing_saved(admin_client, personas):
    secret_key = personas.team_key
    response = key_change_page(admin_client, secret_key)
    data = form_data(response) | {"new_value": NEW_VALUE}
    # Viewers hold Use at most: the service refuses, the form says so.
    add_row(
        data,
        formset_of(response, SecretKeyUserObjectPermission).prefix,
        user=personas.viewer.pk,
        level="manage",
    )

    response = admin_client.post(admin_url("secretkey", "change", secret_key.pk), data)

    assert response.status_code == 200
    assert "viewers can be granted Use only" in response.content.decode()
    saved = SecretKey.objects.get(pk=secret_key.pk)
    assert (saved.value, saved.version) == (TEAM_VALUE, 1)
    assert grant_set(secret_key) == set()


# --- Adding and deleting keys -------------------------------------------------------------


def test_add_key_via_admin(admin_client, personas):
    response = admin_client.get(admin_url("secretkey", "add"))
    data = form_data(response) | {
        "name": "GitHub token",
        "new_value": NEW_VALUE,
        "access": Access.RESTRICTED,
    }
    add_row(
        data,
        formset_of(response, SecretKeyGroupObjectPermission).prefix,
        group=personas.group.group.pk,
        level="use",
    )

    response = admin_client.post(admin_url("secretkey", "add"), data)

    assert response.status_code == 302
    secret_key = SecretKey.objects.get(name="GitHub token")
    assert response["Location"] == admin_url("secretkey", "changelist")
    assert secret_key.organization == personas.organization
    assert secret_key.created_by == personas.admin
    assert stored_value(secret_key) == NEW_VALUE
    assert grant_set(secret_key) == {("group", personas.group.pk, "use")}
    assert AuditEvent.objects.filter(
        secret_key_id=secret_key.pk, action=AuditAction.CREATED
    ).exists()
    assert LogEntry.objects.filter(object_id=str(secret_key.pk)).exists()


def test_add_key_requires_a_value(admin_client, personas):
    data = form_data(admin_client.get(admin_url("secretkey", "add"))) | {"name": "Empty"}

    response = admin_client.post(admin_url("secretkey", "add"), data)

    assert response.status_code == 200
    assert "new_value" in response.context["adminform"].form.errors
    assert not SecretKey.objects.filter(name="Empty").exists()


def test_superuser_adding_a_key_picks_its_organization(client, superuser, personas):
    client.force_login(superuser)
    data = form_data(client.get(admin_url("secretkey", "add"))) | {
        "name": "Globex deploy",
        "new_value": NEW_VALUE,
    }

    without_organization = client.post(admin_url("secretkey", "add"), data)
    data["organization"] = str(personas.other_organization.pk)
    with_organization = client.post(admin_url("secretkey", "add"), data)

    assert without_organization.status_code == 200
    assert "organization" in without_organization.context["adminform"].form.errors
    assert with_organization.status_code == 302
    secret_key = SecretKey.objects.get(name="Globex deploy")
    assert secret_key.organization == personas.other_organization


def test_delete_via_admin_writes_event_and_removes_grants(admin_client, personas):
    secret_key = personas.restricted_key
    assert SecretKeyUserObjectPermission.objects.filter(content_object=secret_key).exists()

    response = admin_client.post(admin_url("secretkey", "delete", secret_key.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not SecretKey.objects.filter(pk=secret_key.pk).exists()
    assert not SecretKeyUserObjectPermission.objects.filter(
        content_object_id=secret_key.pk
    ).exists()
    event = AuditEvent.objects.get(secret_key_id=secret_key.pk, action=AuditAction.DELETED)
    assert event.actor == personas.admin


def test_bulk_delete_action_goes_through_the_service(admin_client, personas, foreign_key):
    response = admin_client.post(
        admin_url("secretkey", "changelist"),
        {
            "action": "delete_selected",
            # A foreign key smuggled into the selection is not in the admin's queryset.
            "_selected_action": [
                personas.restricted_key.pk,
                personas.team_key.pk,
                foreign_key.pk,
            ],
            "post": "yes",
        },
    )

    assert response.status_code == 302
    assert list(SecretKey.objects.all()) == [foreign_key]
    assert AuditEvent.objects.filter(action=AuditAction.DELETED).count() == 2


# --- Members ------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "is_staff"), [(Role.ADMIN, True), (Role.VIEWER, False)])
def test_add_member_via_admin(admin_client, personas, role, is_staff):
    data = form_data(admin_client.get(admin_url("membership", "add"))) | {
        "username": "frank",
        "email": "frank@example.com",
        "password": PASSWORD,
        "role": role,
    }

    response = admin_client.post(admin_url("membership", "add"), data)

    assert response.status_code == 302
    user = User.objects.get(username="frank")
    assert user.membership.organization == personas.organization
    assert user.membership.role == role
    assert user.is_staff is is_staff
    assert user.check_password(PASSWORD)


def test_add_member_shows_service_errors(admin_client, personas):
    data = form_data(admin_client.get(admin_url("membership", "add"))) | {
        "username": "BOB-USE",
        "email": "bob@example.com",
        "password": PASSWORD,
        "role": Role.MEMBER,
    }

    response = admin_client.post(admin_url("membership", "add"), data)

    assert response.status_code == 200
    assert "is taken" in str(response.context["adminform"].form.errors["username"])
    assert PASSWORD not in response.content.decode()


def test_changing_role_admin_to_member_clears_is_staff(admin_client, personas):
    second_admin = services.add_member(
        personas.admin,
        personas.organization,
        username="grace",
        email="grace@example.com",
        password=PASSWORD,
        role=Role.ADMIN,
    )
    assert second_admin.user.is_staff
    url = admin_url("membership", "change", second_admin.pk)
    data = form_data(admin_client.get(url)) | {"role": Role.MEMBER}

    response = admin_client.post(url, data)

    assert response.status_code == 302
    second_admin.refresh_from_db()
    second_admin.user.refresh_from_db()
    assert second_admin.role == Role.MEMBER
    assert not second_admin.user.is_staff


def test_the_last_admin_cannot_be_demoted(admin_client, personas):
    url = admin_url("membership", "change", personas.admin.membership.pk)
    data = form_data(admin_client.get(url)) | {"role": Role.MEMBER}

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert "at least one admin" in response.content.decode()
    assert Membership.objects.get(user=personas.admin).role == Role.ADMIN


def test_removing_a_member_via_admin(admin_client, personas):
    membership = personas.member_use.membership

    response = admin_client.post(admin_url("membership", "delete", membership.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    personas.member_use.refresh_from_db()
    assert not personas.member_use.is_active
    assert ("user", personas.member_use.pk, "use") not in grant_set(personas.restricted_key)


def test_removing_the_last_admin_is_refused_with_a_message(admin_client, personas):
    membership = personas.admin.membership

    single = admin_client.post(
        admin_url("membership", "delete", membership.pk), {"post": "yes"}, follow=True
    )
    bulk = admin_client.post(
        admin_url("membership", "changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [personas.viewer.membership.pk, membership.pk],
            "post": "yes",
        },
        follow=True,
    )

    for response in (single, bulk):
        assert response.status_code == 200
        assert "at least one admin" in response.content.decode()
    assert Membership.objects.filter(pk=membership.pk).exists()
    # The whole action was undone, the viewer's removal included, and nothing was logged.
    assert Membership.objects.filter(pk=personas.viewer.membership.pk).exists()
    assert not LogEntry.objects.exists()


# --- Groups -------------------------------------------------------------------------------


def test_add_and_change_group_via_admin(admin_client, personas, foreign_key):
    data = form_data(admin_client.get(admin_url("organizationgroup", "add"))) | {
        "name": "Oncall",
        "members": [str(personas.member_use.pk), str(personas.viewer.pk)],
    }

    added = admin_client.post(admin_url("organizationgroup", "add"), data)

    assert added.status_code == 302
    group = OrganizationGroup.objects.get(name="Oncall")
    assert group.organization == personas.organization
    assert set(group.group.user_set.all()) == {personas.member_use, personas.viewer}

    url = admin_url("organizationgroup", "change", group.pk)
    data = form_data(admin_client.get(url)) | {
        "name": "On-call",
        "members": [str(personas.member_nothing.pk)],
    }
    changed = admin_client.post(url, data)

    assert changed.status_code == 302
    group.refresh_from_db()
    assert group.name == "On-call"
    assert list(group.group.user_set.all()) == [personas.member_nothing]


def test_group_members_must_be_of_the_organization(admin_client, personas):
    url = admin_url("organizationgroup", "change", personas.group.pk)
    data = form_data(admin_client.get(url)) | {"members": [str(personas.outsider.pk)]}

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert "members" in response.context["adminform"].form.errors
    assert not personas.group.group.user_set.exists()


def test_deleting_a_group_via_admin_records_the_lost_grants(admin_client, personas):
    secret_key = personas.team_key
    services.update_secret_key(
        personas.admin,
        secret_key,
        grants=[{"principal_type": "group", "principal_id": personas.group.pk, "level": "manage"}],
    )

    response = admin_client.post(
        admin_url("organizationgroup", "delete", personas.group.pk), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not OrganizationGroup.objects.filter(pk=personas.group.pk).exists()
    assert grant_set(secret_key) == set()
    assert (
        AuditEvent.objects.filter(
            secret_key_id=secret_key.pk, action=AuditAction.GRANTS_CHANGED
        ).count()
        == 2
    )


# --- Audit log ----------------------------------------------------------------------------


def test_audit_events_are_read_only(admin_client, personas):
    event = AuditEvent.objects.filter(organization=personas.organization).first()
    change_url = admin_url("auditevent", "change", event.pk)

    view = admin_client.get(change_url)

    assert view.status_code == 200
    assert view.context["has_change_permission"] is False
    assert admin_client.get(admin_url("auditevent", "add")).status_code == 403
    assert admin_client.post(change_url, {"action": "deleted"}).status_code == 403
    assert admin_client.get(admin_url("auditevent", "delete", event.pk)).status_code == 403
    listing = admin_client.get(admin_url("auditevent", "changelist"))
    # No action is left once deleting is not allowed.
    assert listing.context["action_form"] is None
    assert AuditEvent.objects.get(pk=event.pk).action == event.action


def test_audit_list_filters_by_action_and_searches_by_key_name(admin_client, personas):
    url = admin_url("auditevent", "changelist")

    created = admin_client.get(url, {"action__exact": AuditAction.CREATED})
    searched = admin_client.get(url, {"q": "stripe"})

    assert {event.action for event in created.context["cl"].result_list} == {"created"}
    assert {event.secret_key_name for event in searched.context["cl"].result_list} == {
        "Stripe live"
    }


# --- Organizations ------------------------------------------------------------------------


def test_superuser_creates_an_organization_with_its_first_admin(client, superuser, personas):
    client.force_login(superuser)
    data = form_data(client.get(admin_url("organization", "add"))) | {
        "name": "Initech",
        "admin_username": "peter",
        "admin_email": "peter@example.com",
        "admin_password": PASSWORD,
    }

    response = client.post(admin_url("organization", "add"), data)

    assert response.status_code == 302
    membership = Membership.objects.get(user__username="peter")
    assert membership.organization == Organization.objects.get(name="Initech")
    assert membership.role == Role.ADMIN
    assert membership.user.is_staff
    view = client.get(admin_url("organization", "change", membership.organization_id))
    assert view.status_code == 200
    assert view.context["has_change_permission"] is False


def test_organization_name_clash_is_a_form_error(client, superuser, personas):
    client.force_login(superuser)
    data = form_data(client.get(admin_url("organization", "add"))) | {
        "name": "ACME",
        "admin_username": "peter",
        "admin_email": "peter@example.com",
        "admin_password": PASSWORD,
    }

    response = client.post(admin_url("organization", "add"), data)

    assert response.status_code == 200
    assert "already exists" in str(response.context["adminform"].form.errors["name"])
    assert not User.objects.filter(username="peter").exists()
