"""Organizations, members, groups, secret keys, their grants and the audit log."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import models
from django.db.models import BooleanField, Case, Exists, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Lower
from django.db.models.query import ModelIterable
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

from secretsapp.fields import StrictEncryptedTextField

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

NAME_MAX_LENGTH = 100
VALUE_MAX_LENGTH = 65_536
USE_PERMISSION = "use_secretkey"
MANAGE_PERMISSION = "manage_secretkey"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Access(models.TextChoices):
    TEAM = "team", "Team"
    RESTRICTED = "restricted", "Restricted"


class Level(models.TextChoices):
    USE = "use", "Use"
    MANAGE = "manage", "Manage"

    @property
    def codename(self) -> str:
        return MANAGE_PERMISSION if self is Level.MANAGE else USE_PERMISSION

    @classmethod
    def from_codename(cls, codename: str) -> Level:
        return cls.MANAGE if codename == MANAGE_PERMISSION else cls.USE


class PrincipalType(models.TextChoices):
    USER = "user", "User"
    GROUP = "group", "Group"


@dataclass(frozen=True)
class Grant:
    """Use or Manage on a key for a user (by user id) or a group (by organization group id)."""

    principal_type: str
    principal_id: int
    level: str
    principal_name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # Plain strings: enum members hash by their name, which would break set arithmetic.
        object.__setattr__(self, "principal_type", str(self.principal_type))
        object.__setattr__(self, "level", str(self.level))

    def as_dict(self) -> dict[str, object]:
        return {
            "principal_type": self.principal_type,
            "principal_id": self.principal_id,
            "principal_name": self.principal_name,
            "level": self.level,
        }


class Organization(models.Model):
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("name"), name="organization_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's place in their (one) organization."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user.get_username()} ({self.get_role_display()} of {self.organization})"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def can_edit(self) -> bool:
        """Admins and members write; viewers only see and run."""
        return self.role in (Role.ADMIN, Role.MEMBER)


def get_membership(user: AbstractBaseUser | AnonymousUser | None) -> Membership | None:
    """The user's membership (cached on the user object), or None for outsiders."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    try:
        return user.membership
    except Membership.DoesNotExist:
        return None


class OrganizationGroup(models.Model):
    """A named set of members, backed by an auth group so guardian can grant to it."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="member_groups"
    )
    group = models.OneToOneField(Group, on_delete=models.CASCADE, related_name="organization_group")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                "organization", Lower("name"), name="organizationgroup_unique_name_per_org"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @staticmethod
    def auth_group_name(organization: Organization, name: str) -> str:
        # auth group names are globally unique; namespace them by organization.
        return f"org-{organization.pk}:{name}"


class SecretKeyQuerySet(models.QuerySet):
    def for_user(self, user: AbstractBaseUser | AnonymousUser | None) -> SecretKeyQuerySet:
        """Keys the user may Use, annotated with ``can_use`` and ``can_manage``.

        The rules of DESIGN.md in one query (plus the membership, cached on the user):
        admins Manage every key of their organization; the creator and Manage grants
        (direct or through a group) Manage; Team access or any grant gives Use. A viewer's
        role caps them at Use whatever they were granted.
        """
        membership = get_membership(user)
        if membership is None:
            return self.none().annotate(can_use=Value(False), can_manage=Value(False))
        keys = self.filter(organization_id=membership.organization_id)
        if membership.role == Role.ADMIN:
            return keys.annotate(can_use=Value(True), can_manage=Value(True))

        user_grants = SecretKeyUserObjectPermission.objects.filter(user_id=user.pk)
        # Through the user's group memberships, without joining auth_group.
        group_grants = SecretKeyGroupObjectPermission.objects.filter(
            Exists(
                get_user_model().groups.through.objects.filter(
                    user_id=user.pk, group_id=OuterRef("group_id")
                )
            )
        )
        any_grant = _has_grant(user_grants) | _has_grant(group_grants)
        if membership.role == Role.VIEWER:
            return keys.filter(Q(access=Access.TEAM) | any_grant).annotate(
                can_use=Value(True), can_manage=Value(False)
            )
        # By id rather than through a join, so that a grant is still one index probe.
        manage = Permission.objects.filter(codename=MANAGE_PERMISSION).values("pk")
        manage_grant = _has_grant(user_grants.filter(permission_id__in=manage)) | _has_grant(
            group_grants.filter(permission_id__in=manage)
        )
        # Filtering on the rule itself, not on a CASE annotation, keeps the annotations out
        # of the COUNT(*) that pagination runs.
        return keys.filter(Q(access=Access.TEAM) | Q(created_by=user) | any_grant).annotate(
            can_use=Value(True),
            can_manage=Case(
                When(Q(created_by=user) | manage_grant, then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            ),
        )

    def with_grants(self) -> SecretKeyQuerySet:
        """Load what ``SecretKey.grants`` reads with the keys: two queries for any number."""
        clone = self._chain()
        if clone._iterable_class is ModelIterable:
            clone._iterable_class = _WithGrantsIterable
        return clone

    def names_usable_by(
        self, user: AbstractBaseUser | AnonymousUser | None, ids: object
    ) -> dict[str, str]:
        """{id: name} of those keys the user may use, for the chips that name references:
        a key the user may not use stays unnamed (its name is not theirs to see)."""
        rows = self.for_user(user).filter(pk__in=ids).values_list("pk", "name")
        return {str(pk): name for pk, name in rows}

    def usable_by(self, user: AbstractBaseUser | AnonymousUser | None) -> SecretKeyQuerySet:
        return self.for_user(user)

    def managed_by(self, user: AbstractBaseUser | AnonymousUser | None) -> SecretKeyQuerySet:
        return self.for_user(user).filter(can_manage=True)


def _has_grant(grants: models.QuerySet) -> Exists:
    """Is one of these grants on the key? One probe of a (key, principal) index per key,
    so a page or a single key costs the same among 10 or 10,000 keys. (PostgreSQL runs
    with JIT off, see settings: it would compile the count of 10,000 keys, 8 ms for 2.)"""
    return Exists(grants.filter(content_object=OuterRef("pk")))


class _WithGrantsIterable(ModelIterable):
    def __iter__(self):
        secret_keys = list(super().__iter__())
        grants = _load_grants([secret_key.pk for secret_key in secret_keys])
        for secret_key in secret_keys:
            secret_key._loaded_grants = grants[secret_key.pk]
        yield from secret_keys


def _load_grants(secret_key_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Grant]]:
    """The grants of the keys, users (by name) then groups (by name), in two queries.

    Rows rather than prefetched model instances (a grant, its permission and its user or
    group): a page of 50 keys costs a quarter of the time.
    """
    grants: dict[uuid.UUID, list[Grant]] = {secret_key_id: [] for secret_key_id in secret_key_ids}
    if not grants:
        return grants
    user_rows = (
        SecretKeyUserObjectPermission.objects.filter(content_object_id__in=secret_key_ids)
        .order_by("user__username")
        .values_list("content_object_id", "user_id", "permission__codename", "user__username")
    )
    group_rows = (
        SecretKeyGroupObjectPermission.objects.filter(content_object_id__in=secret_key_ids)
        .order_by("group__organization_group__name")
        .values_list(
            "content_object_id",
            "group__organization_group__id",
            "permission__codename",
            "group__organization_group__name",
        )
    )
    for principal_type, rows in (
        (PrincipalType.USER, user_rows),
        (PrincipalType.GROUP, group_rows),
    ):
        for secret_key_id, principal_id, codename, principal_name in rows:
            grants[secret_key_id].append(
                Grant(principal_type, principal_id, Level.from_codename(codename), principal_name)
            )
    return grants


def _last_use(secret_key_id: object) -> models.QuerySet:
    """The time of the key's latest ``used`` event (index ``auditevent_key_created``)."""
    return (
        AuditEvent.objects.filter(secret_key_id=secret_key_id, action=AuditAction.USED)
        .order_by("-created_at")
        .values("created_at")[:1]
    )


class SecretKeyManager(models.Manager.from_queryset(SecretKeyQuerySet)):
    def get_queryset(self) -> SecretKeyQuerySet:
        # The value is decrypted only where it is needed (execution): lists, admin pages
        # and permission checks never load it. The last use comes from the audit log
        # (a subquery, evaluated only for the rows read: counts and values() leave it out).
        return (
            super()
            .get_queryset()
            .defer("value")
            .annotate(last_used_at=Subquery(_last_use(OuterRef("pk"))))
        )


class SecretKey(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="secret_keys"
    )
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    # serialize=False: dumpdata and other serializers never export a value.
    value = StrictEncryptedTextField(serialize=False)
    access = models.CharField(max_length=10, choices=Access.choices, default=Access.TEAM)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="created_secret_keys",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    value_updated_at = models.DateTimeField(default=timezone.now)
    version = models.PositiveIntegerField(default=1)

    objects = SecretKeyManager()

    class Meta:
        verbose_name = "secret key"
        permissions = [
            (USE_PERMISSION, "Use the secret key in actions"),
            (MANAGE_PERMISSION, "Rename, update, share and delete the secret key"),
        ]
        constraints = [
            models.UniqueConstraint(
                "organization", Lower("name"), name="secretkey_unique_name_per_org"
            ),
            models.CheckConstraint(
                condition=Q(access__in=Access.values), name="secretkey_access_valid"
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="secretkey_version_positive"),
        ]
        indexes = [
            # Holds every column the visibility rule reads, so counting the keys a member
            # may Use (the API's pagination) never reads the table rows.
            models.Index(
                fields=["organization", "access", "created_by", "id"],
                name="secretkey_org_visibility",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def last_used_at(self) -> datetime.datetime | None:
        """When a run last used the key: its latest ``used`` audit event. Not a column, so
        a run writes no key row (one statement fewer, and concurrent runs of the same keys
        do not queue on their row locks); the manager's queries load it with the keys."""
        if "_last_used_at" not in self.__dict__:
            self._last_used_at = _last_use(self.pk).values_list("created_at", flat=True).first()
        return self._last_used_at

    @last_used_at.setter
    def last_used_at(self, value: datetime.datetime | None) -> None:
        self._last_used_at = value  # the manager's annotation

    @property
    def reference(self) -> str:
        return f"{{{{secret:{self.id}}}}}"

    @property
    def etag(self) -> str:
        """Changes at every write (value, name, access or grants), unlike ``version``.

        Clients send it back in ``If-Match`` so two managers cannot silently overwrite
        each other's changes.
        """
        return f'"{self.version}-{int(self.updated_at.timestamp() * 1_000_000)}"'

    @property
    def grants(self) -> list[Grant]:
        """Users first, then groups; use ``with_grants()`` when reading many keys."""
        loaded = getattr(self, "_loaded_grants", None)
        if loaded is None:
            return _load_grants([self.pk])[self.pk]
        return list(loaded)


class SecretKeyUserObjectPermission(UserObjectPermissionBase):
    """A grant of Use or Manage on one key to one user; deleted with the key."""

    content_object = models.ForeignKey(
        SecretKey, on_delete=models.CASCADE, related_name="user_grants"
    )

    class Meta(UserObjectPermissionBase.Meta):
        abstract = False
        indexes = [
            # "Has this user a grant on this key?", asked for every key a list considers.
            models.Index(fields=["content_object", "user"], name="secretkeyuserperm_key_user"),
        ]


class SecretKeyGroupObjectPermission(GroupObjectPermissionBase):
    """A grant of Use or Manage on one key to one group; deleted with the key."""

    content_object = models.ForeignKey(
        SecretKey, on_delete=models.CASCADE, related_name="group_grants"
    )

    class Meta(GroupObjectPermissionBase.Meta):
        abstract = False
        indexes = [
            # "Has one of this user's groups a grant on this key?", for every key listed.
            models.Index(fields=["content_object", "group"], name="secretkeygroupperm_key_group"),
        ]


class AuditAction(models.TextChoices):
    CREATED = "created", "Created"
    RENAMED = "renamed", "Renamed"
    VALUE_UPDATED = "value_updated", "Value updated"
    ACCESS_CHANGED = "access_changed", "Access changed"
    GRANTS_CHANGED = "grants_changed", "Grants changed"
    DELETED = "deleted", "Deleted"
    USED = "used", "Used"
    DENIED = "denied", "Permission denied"
    # Not about a key (``secret_key_id`` is null): a workflow's webhook, whose runs act with
    # the rights of whoever set it up. ``changes`` names the workflow, never the token.
    WEBHOOK_CREATED = "webhook_created", "Webhook created"
    WEBHOOK_ROTATED = "webhook_rotated", "Webhook token rotated"
    WEBHOOK_REMOVED = "webhook_removed", "Webhook removed"


class AuditEvent(models.Model):
    """Append-only record of what happened to a key. Never holds a value."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="audit_events"
    )
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Kept as text so the log still says who it was after the user is deleted.
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=20, choices=AuditAction.choices)
    # Not a foreign key: the event outlives the key it is about.
    secret_key_id = models.UUIDField(null=True, blank=True)
    secret_key_name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="auditevent_org_created"),
            # A key's events, newest first: the audit log's ?secret= filter, and its last use
            # (SecretKey.last_used_at: the walk stops at the newest `used` event).
            models.Index(fields=["secret_key_id", "-created_at"], name="auditevent_key_created"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()}: {self.secret_key_name} by {self.actor_name}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)
