"""Every write of organizations, members, groups and secret keys.

Forms, serializers, admin and management commands call these functions; none of them
writes a model directly. Each function takes the acting user first, checks that the actor
may do it (through ``secretsapp.access``), validates everything before writing anything,
and runs in one transaction. Every key write is recorded through ``secretsapp.audit``,
the one place where audit events are made. A secret value is never logged, audited or put
in an error message.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from guardian.shortcuts import assign_perm, remove_perm

from secretsapp import access, audit
from secretsapp.models import (
    NAME_MAX_LENGTH,
    VALUE_MAX_LENGTH,
    Access,
    AuditAction,
    Grant,
    Level,
    Membership,
    Organization,
    OrganizationGroup,
    PrincipalType,
    Role,
    SecretKey,
    SecretKeyGroupObjectPermission,
    SecretKeyUserObjectPermission,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

User = get_user_model()


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class StaleWrite(Exception):
    """The key changed since the client read it (its ``If-Match`` precondition failed)."""


# --- Validation helpers ------------------------------------------------------------------


def clean_name(name: object, field: str = "name") -> str:
    if not isinstance(name, str):
        raise ValidationError({field: "Enter a name."})
    name = name.strip()
    if not name:
        raise ValidationError({field: "Enter a name."})
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationError({field: f"Use at most {NAME_MAX_LENGTH} characters."})
    if any(unicodedata.category(character).startswith("C") for character in name):
        raise ValidationError({field: "Names cannot contain control characters."})
    return name


@sensitive_variables("value")
def _clean_value(value: object) -> str:
    if not isinstance(value, str) or value == "":
        raise ValidationError({"value": "Enter a value."})
    if len(value) > VALUE_MAX_LENGTH:
        raise ValidationError({"value": f"Use at most {VALUE_MAX_LENGTH:,} characters."})
    if "\x00" in value:
        raise ValidationError({"value": "The value cannot contain NUL characters."})
    return value


SHORT_VALUE = 8


def value_warnings(value: str) -> list[str]:
    """What a user should know about a value they save (it is saved all the same)."""
    if len(value) < SHORT_VALUE:
        return [
            f"The value is shorter than {SHORT_VALUE} characters: run outputs cannot be "
            "redacted reliably for it, because such short text also occurs by chance."
        ]
    return []


def _clean_access(value: object) -> str:
    if value not in Access.values:
        raise ValidationError({"access": f"Choose one of: {', '.join(Access.values)}."})
    return value


def _require_unique_key_name(
    organization_id: int, name: str, exclude_pk: object | None = None
) -> None:
    duplicates = SecretKey.objects.filter(organization_id=organization_id, name__iexact=name)
    if exclude_pk is not None:
        duplicates = duplicates.exclude(pk=exclude_pk)
    if duplicates.exists():
        raise ValidationError({"name": f"A secret key named “{name}” already exists."})


def _save_unique(instance: Any, field: str, message: str, **save_kwargs: Any) -> None:
    """Save, turning a unique-constraint race into the same error the pre-check gives."""
    try:
        with transaction.atomic():
            instance.save(**save_kwargs)
    except IntegrityError as error:
        raise ValidationError({field: message}) from error


def _clean_grants(organization: Organization, grants: Iterable[Any]) -> list[Grant]:
    """Grants as ``Grant``s or dicts; every principal must belong to ``organization``."""
    errors: list[str] = []
    parsed: list[Grant] = []
    for index, raw in enumerate(grants, start=1):
        item = raw.as_dict() if isinstance(raw, Grant) else raw
        if not isinstance(item, Mapping):
            errors.append(f"Grant {index}: expected an object.")
            continue
        principal_type = item.get("principal_type")
        level = item.get("level")
        principal_id = item.get("principal_id")
        if principal_type not in PrincipalType.values:
            errors.append(f"Grant {index}: principal_type must be “user” or “group”.")
            continue
        if level not in Level.values:
            errors.append(f"Grant {index}: level must be “use” or “manage”.")
            continue
        if not isinstance(principal_id, int) or access.as_id(principal_id) is None:
            errors.append(f"Grant {index}: principal_id must be a positive integer id.")
            continue
        parsed.append(Grant(principal_type, principal_id, Level(level)))
    if errors:
        raise ValidationError({"grants": errors})

    user_ids = {grant.principal_id for grant in parsed if grant.principal_type == "user"}
    group_ids = {grant.principal_id for grant in parsed if grant.principal_type == "group"}
    members = {
        membership.user_id: membership
        for membership in Membership.objects.filter(
            organization=organization, user_id__in=user_ids
        ).select_related("user")
    }
    groups = {
        group.pk: group
        for group in OrganizationGroup.objects.filter(organization=organization, pk__in=group_ids)
    }
    seen: set[tuple[str, int]] = set()
    cleaned: list[Grant] = []
    for index, grant in enumerate(parsed, start=1):
        principal = (grant.principal_type, grant.principal_id)
        if principal in seen:
            errors.append(f"Grant {index}: this {grant.principal_type} is listed twice.")
            continue
        seen.add(principal)
        if grant.principal_type == "user":
            membership = members.get(grant.principal_id)
            if membership is None:
                errors.append(f"Grant {index}: no user {grant.principal_id} in this organization.")
                continue
            if membership.role == Role.VIEWER and grant.level == Level.MANAGE:
                errors.append(f"Grant {index}: viewers can be granted Use only.")
                continue
            name = membership.user.get_username()
        else:
            group = groups.get(grant.principal_id)
            if group is None:
                errors.append(f"Grant {index}: no group {grant.principal_id} in this organization.")
                continue
            name = group.name
        cleaned.append(Grant(grant.principal_type, grant.principal_id, grant.level, name))
    if errors:
        raise ValidationError({"grants": errors})
    return cleaned


def _lock_key_for_manage(
    actor: AbstractBaseUser, secret_key: SecretKey, expected_etag: str | None = None
) -> SecretKey:
    """Re-read the key under a row lock, check the actor may Manage it and, when the
    caller read it earlier, that nobody has changed it since."""
    locked = SecretKey.objects.select_for_update().get(pk=secret_key.pk)
    access.check_secret(actor, locked, "manage")
    if expected_etag is not None and expected_etag not in ("*", locked.etag):
        raise StaleWrite(
            "This secret key was changed by someone else since you read it; "
            "read it again and retry."
        )
    return locked


# --- Secret keys -------------------------------------------------------------------------


@sensitive_variables("value", "cleaned")
def create_secret_key(
    actor: AbstractBaseUser,
    *,
    name: str,
    value: str,
    access_level: str = Access.TEAM,
    grants: Iterable[Any] = (),
    organization: Organization | None = None,
) -> SecretKey:
    """Create a key in the actor's organization (superusers name the organization)."""
    if organization is None or not access.is_superuser(actor):
        organization = access.require_editor(actor, organization).organization
    errors: dict[str, Any] = {}
    cleaned: dict[str, Any] = {}
    for field, clean, raw in (
        ("name", clean_name, name),
        ("value", _clean_value, value),
        ("access", _clean_access, access_level),
    ):
        try:
            cleaned[field] = clean(raw)
        except ValidationError as error:
            errors.update(error.message_dict)
    try:
        cleaned_grants = _clean_grants(organization, grants)
    except ValidationError as error:
        errors.update(error.message_dict)
    if "name" in cleaned:
        try:
            _require_unique_key_name(organization.pk, cleaned["name"])
        except ValidationError as error:
            errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)

    now = timezone.now()
    secret_key = SecretKey(
        organization=organization,
        name=cleaned["name"],
        value=cleaned["value"],
        access=cleaned["access"],
        created_by=actor,
        created_at=now,
        updated_at=now,
        value_updated_at=now,
    )
    with transaction.atomic():
        _save_unique(secret_key, "name", f"A secret key named “{cleaned['name']}” already exists.")
        _apply_grants(secret_key, [], cleaned_grants)
        audit.record_event(
            actor,
            AuditAction.CREATED,
            secret_key,
            {"access": secret_key.access, "grants": [grant.as_dict() for grant in cleaned_grants]},
        )
    return secret_key


@sensitive_variables("value", "cleaned")
def update_secret_key(
    actor: AbstractBaseUser,
    secret_key: SecretKey,
    *,
    name: Any = UNSET,
    value: Any = UNSET,
    access_level: Any = UNSET,
    grants: Any = UNSET,
    expected_etag: str | None = None,
) -> SecretKey:
    """Change any of name, value, access and grants at once (all or nothing).

    Each kind of change is its own audit event. A value change bumps ``version``; a
    rename or a grant change leaves value and version alone. ``expected_etag`` (from
    ``If-Match``) makes a write of a key changed meanwhile fail with ``StaleWrite``.
    """
    with transaction.atomic():
        locked = _lock_key_for_manage(actor, secret_key, expected_etag)
        errors: dict[str, Any] = {}
        cleaned: dict[str, Any] = {}
        for field, clean, raw in (
            ("name", clean_name, name),
            ("value", _clean_value, value),
            ("access", _clean_access, access_level),
        ):
            if raw is UNSET:
                continue
            try:
                cleaned[field] = clean(raw)
            except ValidationError as error:
                errors.update(error.message_dict)
        if grants is not UNSET:
            try:
                cleaned["grants"] = _clean_grants(locked.organization, grants)
            except ValidationError as error:
                errors.update(error.message_dict)
        if "name" in cleaned:
            try:
                _require_unique_key_name(locked.organization_id, cleaned["name"], locked.pk)
            except ValidationError as error:
                errors.update(error.message_dict)
        if errors:
            raise ValidationError(errors)

        now = timezone.now()
        events: list[tuple[AuditAction, dict[str, Any]]] = []
        update_fields: list[str] = []
        if "name" in cleaned and cleaned["name"] != locked.name:
            events.append(
                (AuditAction.RENAMED, {"name": {"from": locked.name, "to": cleaned["name"]}})
            )
            locked.name = cleaned["name"]
            update_fields.append("name")
        if "value" in cleaned:
            events.append(
                (
                    AuditAction.VALUE_UPDATED,
                    {"version": {"from": locked.version, "to": locked.version + 1}},
                )
            )
            locked.value = cleaned["value"]
            locked.version += 1
            locked.value_updated_at = now
            update_fields += ["value", "version", "value_updated_at"]
        if "access" in cleaned and cleaned["access"] != locked.access:
            events.append(
                (
                    AuditAction.ACCESS_CHANGED,
                    {"access": {"from": locked.access, "to": cleaned["access"]}},
                )
            )
            locked.access = cleaned["access"]
            update_fields.append("access")
        if update_fields:
            locked.updated_at = now
            _save_unique(
                locked,
                "name",
                f"A secret key named “{locked.name}” already exists.",
                update_fields=[*update_fields, "updated_at"],
            )
        if "grants" in cleaned:
            before = SecretKey.objects.with_grants().get(pk=locked.pk).grants
            added, removed = _apply_grants(locked, before, cleaned["grants"])
            if added or removed:
                if not update_fields:
                    locked.updated_at = now
                    locked.save(update_fields=["updated_at"])
                events.append(
                    (
                        AuditAction.GRANTS_CHANGED,
                        {
                            "added": [grant.as_dict() for grant in added],
                            "removed": [grant.as_dict() for grant in removed],
                        },
                    )
                )
        for action, changes in events:
            audit.record_event(actor, action, locked, changes)
    return locked


def rename_secret_key(actor: AbstractBaseUser, secret_key: SecretKey, name: str) -> SecretKey:
    return update_secret_key(actor, secret_key, name=name)


@sensitive_variables("value")
def update_secret_value(actor: AbstractBaseUser, secret_key: SecretKey, value: str) -> SecretKey:
    return update_secret_key(actor, secret_key, value=value)


def change_secret_access(
    actor: AbstractBaseUser,
    secret_key: SecretKey,
    *,
    access_level: Any = UNSET,
    grants: Any = UNSET,
) -> SecretKey:
    return update_secret_key(actor, secret_key, access_level=access_level, grants=grants)


def delete_secret_key(
    actor: AbstractBaseUser, secret_key: SecretKey, expected_etag: str | None = None
) -> None:
    """Delete the key; its grants go with it (foreign keys with CASCADE)."""
    with transaction.atomic():
        locked = _lock_key_for_manage(actor, secret_key, expected_etag)
        audit.record_event(actor, AuditAction.DELETED, locked, {"version": locked.version})
        locked.delete()


def _apply_grants(
    secret_key: SecretKey, before: list[Grant], after: list[Grant]
) -> tuple[list[Grant], list[Grant]]:
    """Make the key's grants equal ``after``; return (added, removed)."""
    before_set, after_set = set(before), set(after)
    # A changed level is a removal of the old grant and an addition of the new one.
    removed = [grant for grant in before if grant not in after_set]
    added = [grant for grant in after if grant not in before_set]
    for grant in removed:
        remove_perm(Level(grant.level).codename, _principal(grant), secret_key)
    for grant in added:
        assign_perm(Level(grant.level).codename, _principal(grant), secret_key)
    return added, removed


def _principal(grant: Grant) -> Any:
    if grant.principal_type == PrincipalType.USER:
        return User.objects.get(pk=grant.principal_id)
    return Group.objects.get(organization_group__pk=grant.principal_id)


def _remove_grants_where(
    actor: AbstractBaseUser, organization: Organization, user: Any = None, group: Any = None
) -> None:
    """Drop every grant a user or group holds on the organization's keys, audited per key."""
    if user is not None:
        rows = SecretKeyUserObjectPermission.objects.filter(
            user=user, content_object__organization=organization
        )
    else:
        rows = SecretKeyGroupObjectPermission.objects.filter(
            group=group, content_object__organization=organization
        )
    keys = SecretKey.objects.filter(pk__in=rows.values("content_object")).with_grants()
    for secret_key in keys:
        removed = [
            grant
            for grant in secret_key.grants
            if (
                user is not None
                and grant.principal_type == "user"
                and grant.principal_id == user.pk
            )
            or (
                group is not None
                and grant.principal_type == "group"
                and grant.principal_id == group.organization_group.pk
            )
        ]
        audit.record_event(
            actor,
            AuditAction.GRANTS_CHANGED,
            secret_key,
            {"added": [], "removed": [grant.as_dict() for grant in removed]},
        )
    key_ids = [secret_key.pk for secret_key in keys]
    rows.delete()
    # Every grant write moves the keys' ETag, so an If-Match read before it is stale.
    SecretKey.objects.filter(pk__in=key_ids).update(updated_at=timezone.now())


# --- Organizations and members -----------------------------------------------------------


def _clean_new_user(username: object, email: object, password: object) -> dict[str, str]:
    errors: dict[str, list[str]] = {}
    if not isinstance(username, str) or not username.strip():
        errors["username"] = ["Enter a username."]
    else:
        username = username.strip()
        try:
            User.username_validator(username)
        except ValidationError as error:
            errors["username"] = error.messages
        else:
            if len(username) > 150:
                errors["username"] = ["Use at most 150 characters."]
            elif User.objects.filter(username__iexact=username).exists():
                errors["username"] = [f"The username “{username}” is taken."]
    if not isinstance(email, str) or not email.strip():
        errors["email"] = ["Enter an email address."]
    else:
        email = email.strip()
        try:
            validate_email(email)
        except ValidationError as error:
            errors["email"] = error.messages
    if not isinstance(password, str) or not password:
        errors["password"] = ["Enter a password."]
    elif "username" not in errors:
        try:
            validate_password(password, User(username=username, email=email))
        except ValidationError as error:
            errors["password"] = error.messages
    if errors:
        raise ValidationError(errors)
    return {"username": username, "email": email, "password": password}


def _clean_role(role: object) -> str:
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Role.values)}."})
    return role


def _sync_staff(user: Any, role: str | None) -> None:
    """Organization admins are staff (they use Django admin); nobody else is, bar superusers."""
    should_be_staff = role == Role.ADMIN or user.is_superuser
    if user.is_staff != should_be_staff:
        user.is_staff = should_be_staff
        user.save(update_fields=["is_staff"])


@sensitive_variables("password")
def create_organization(
    name: str, *, admin_username: str, admin_email: str, admin_password: str
) -> Organization:
    """A new organization with its first admin. Used by the command line and superusers."""
    errors: dict[str, Any] = {}
    try:
        name = clean_name(name)
        if Organization.objects.filter(name__iexact=name).exists():
            raise ValidationError({"name": f"An organization named “{name}” already exists."})
    except ValidationError as error:
        errors.update(error.message_dict)
    try:
        user_fields = _clean_new_user(admin_username, admin_email, admin_password)
    except ValidationError as error:
        errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        organization = Organization(name=name)
        _save_unique(organization, "name", f"An organization named “{name}” already exists.")
        user = User.objects.create_user(**user_fields)
        Membership.objects.create(user=user, organization=organization, role=Role.ADMIN)
        _sync_staff(user, Role.ADMIN)
    return organization


@sensitive_variables("password")
def add_member(
    actor: AbstractBaseUser,
    organization: Organization,
    *,
    username: str,
    email: str,
    password: str,
    role: str = Role.MEMBER,
) -> Membership:
    access.require_admin(actor, organization)
    errors: dict[str, Any] = {}
    try:
        user_fields = _clean_new_user(username, email, password)
    except ValidationError as error:
        errors.update(error.message_dict)
    try:
        role = _clean_role(role)
    except ValidationError as error:
        errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        user = User.objects.create_user(**user_fields)
        membership = Membership.objects.create(user=user, organization=organization, role=role)
        _sync_staff(user, role)
    return membership


def _require_other_admin(membership: Membership) -> None:
    others = Membership.objects.filter(
        organization_id=membership.organization_id, role=Role.ADMIN
    ).exclude(pk=membership.pk)
    if membership.role == Role.ADMIN and not others.exists():
        raise ValidationError(
            {"role": "An organization needs at least one admin; make someone else admin first."}
        )


def change_role(actor: AbstractBaseUser, membership: Membership, role: str) -> Membership:
    access.require_admin(actor, membership.organization)
    role = _clean_role(role)
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update().select_related("user").get(pk=membership.pk)
        )
        if role == membership.role:
            return membership
        if role != Role.ADMIN:
            _require_other_admin(membership)
        if role == Role.VIEWER:
            # Viewers hold Use at most: turn their direct Manage grants into Use.
            _downgrade_manage_grants(actor, membership)
        membership.role = role
        membership.save(update_fields=["role"])
        _sync_staff(membership.user, role)
    return membership


def _downgrade_manage_grants(actor: AbstractBaseUser, membership: Membership) -> None:
    grants = SecretKeyUserObjectPermission.objects.filter(
        user_id=membership.user_id,
        content_object__organization_id=membership.organization_id,
        permission__codename=Level.MANAGE.codename,
    ).select_related("content_object")
    for grant in grants:
        update_secret_key(
            actor,
            grant.content_object,
            grants=[
                Grant(g.principal_type, g.principal_id, Level.USE)
                if (g.principal_type, g.principal_id) == ("user", membership.user_id)
                else g
                for g in SecretKey.objects.with_grants().get(pk=grant.content_object_id).grants
            ],
        )


def remove_member(actor: AbstractBaseUser, membership: Membership) -> None:
    """Take the user out of the organization: grants and groups go, the account is disabled."""
    access.require_admin(actor, membership.organization)
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update()
            .select_related("user", "organization")
            .get(pk=membership.pk)
        )
        _require_other_admin(membership)
        user = membership.user
        _remove_grants_where(actor, membership.organization, user=user)
        user.groups.remove(
            *Group.objects.filter(organization_group__organization=membership.organization)
        )
        membership.delete()
        # Without an organization the account can do nothing; disabling it also ends
        # its API tokens and sessions (both check is_active).
        user.is_active = False
        user.save(update_fields=["is_active"])
        _sync_staff(user, None)


# --- Groups ------------------------------------------------------------------------------


def _clean_group_members(organization: Organization, members: Iterable[Any]) -> list[Any]:
    member_ids: list[int] = []
    for member in members:
        member_id = getattr(member, "pk", member)
        if not isinstance(member_id, int) or access.as_id(member_id) is None:
            raise ValidationError({"members": "Members are user ids (positive integers)."})
        member_ids.append(member_id)
    users = list(User.objects.filter(pk__in=member_ids, membership__organization=organization))
    missing = sorted(set(member_ids) - {user.pk for user in users})
    if missing:
        raise ValidationError(
            {"members": f"Not members of this organization: {', '.join(map(str, missing))}."}
        )
    return users


def _require_unique_group_name(
    organization: Organization, name: str, exclude_pk: int | None = None
) -> None:
    duplicates = OrganizationGroup.objects.filter(organization=organization, name__iexact=name)
    if exclude_pk is not None:
        duplicates = duplicates.exclude(pk=exclude_pk)
    if duplicates.exists():
        raise ValidationError({"name": f"A group named “{name}” already exists."})


def create_group(
    actor: AbstractBaseUser,
    organization: Organization,
    *,
    name: str,
    members: Iterable[Any] = (),
) -> OrganizationGroup:
    access.require_admin(actor, organization)
    errors: dict[str, Any] = {}
    try:
        name = clean_name(name)
        _require_unique_group_name(organization, name)
    except ValidationError as error:
        errors.update(error.message_dict)
    try:
        users = _clean_group_members(organization, members)
    except ValidationError as error:
        errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        group = Group.objects.create(name=OrganizationGroup.auth_group_name(organization, name))
        organization_group = OrganizationGroup(organization=organization, group=group, name=name)
        _save_unique(organization_group, "name", f"A group named “{name}” already exists.")
        group.user_set.set(users)
    return organization_group


def update_group(
    actor: AbstractBaseUser,
    organization_group: OrganizationGroup,
    *,
    name: Any = UNSET,
    members: Any = UNSET,
) -> OrganizationGroup:
    organization = organization_group.organization
    access.require_admin(actor, organization)
    errors: dict[str, Any] = {}
    if name is not UNSET:
        try:
            name = clean_name(name)
            _require_unique_group_name(organization, name, organization_group.pk)
        except ValidationError as error:
            errors.update(error.message_dict)
    if members is not UNSET:
        try:
            members = _clean_group_members(organization, members)
        except ValidationError as error:
            errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        if name is not UNSET and name != organization_group.name:
            organization_group.name = name
            _save_unique(
                organization_group,
                "name",
                f"A group named “{name}” already exists.",
                update_fields=["name"],
            )
            organization_group.group.name = OrganizationGroup.auth_group_name(organization, name)
            organization_group.group.save(update_fields=["name"])
        if members is not UNSET:
            organization_group.group.user_set.set(members)
    return organization_group


def delete_group(actor: AbstractBaseUser, organization_group: OrganizationGroup) -> None:
    """Delete the group; the keys it had grants on record the change."""
    organization = organization_group.organization
    access.require_admin(actor, organization)
    with transaction.atomic():
        _remove_grants_where(actor, organization, group=organization_group.group)
        # The auth group's deletion cascades to the organization group.
        organization_group.group.delete()
