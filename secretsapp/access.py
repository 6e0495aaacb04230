"""Who may see, use and manage what. Views, the API, admin and services all ask here.

A foreign or invisible object is a 404 (``Http404``) so its existence does not leak; a
visible one without the needed right is a 403 (``PermissionDenied``).

This is the one place that decides. DRF permission classes, ``ModelAdmin.has_*_permission``
methods, page views and the authentication backend (``secretsapp.backends``, which gives
``user.has_perm`` the same answers) are one-line adapters over the predicates below.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import Http404

from secretsapp import audit
from secretsapp.models import (
    AuditAction,
    Membership,
    Organization,
    OrganizationGroup,
    Role,
    SecretKey,
    SecretKeyQuerySet,
    get_membership,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser

Need = Literal["use", "manage"]


def organization_of(user: AnyUser) -> Organization | None:
    membership = get_membership(user)
    return membership.organization if membership else None


# --- Roles -------------------------------------------------------------------------------
# Booleans for adapters that must answer True or False (permission classes, admin methods,
# the backend); the require_* functions below raise 404/403 from the same answers.


def is_superuser(user: AnyUser | None) -> bool:
    """An active superuser: the one place this rule is written. They administer every
    organization in Django admin and may Use and Manage every key; pages and the API
    still show them only what their own membership shows."""
    return bool(getattr(user, "is_superuser", False) and getattr(user, "is_active", False))


def is_member(user: AnyUser | None, organization_id: int | None = None) -> bool:
    """Signed in, active and a member of an organization (of ``organization_id``, when
    given), any role."""
    membership = get_membership(user)
    return membership is not None and (
        organization_id is None or membership.organization_id == organization_id
    )


def is_admin(user: AnyUser | None, organization_id: int | None = None) -> bool:
    """An admin of their organization (of ``organization_id``, when given). The role
    alone: ``administers`` adds superusers, for Django admin and the services."""
    membership = get_membership(user)
    return (
        membership is not None
        and membership.is_admin
        and (organization_id is None or membership.organization_id == organization_id)
    )


def may_edit(user: AnyUser | None) -> bool:
    """Admins and members create and change keys and workflows; viewers see and run."""
    membership = get_membership(user)
    return membership is not None and membership.can_edit


def administers(user: AnyUser | None, organization_id: int | None = None) -> bool:
    """Manages members, groups and every key of the organization (``organization_id``: an
    object's organization; None: their own): its admins, and superusers everywhere."""
    return is_superuser(user) or is_admin(user, organization_id)


def _as_uuid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404("No such secret key.") from None


def get_secret_for_user(
    user: AnyUser,
    secret_id: object,
    need: Need = "use",
    queryset: SecretKeyQuerySet | None = None,
) -> SecretKey:
    """The key with ``can_use``/``can_manage`` set, if ``user`` may ``need`` it.

    Invisible (foreign, restricted without a grant, unknown): 404. Visible but the user
    may only Use it and ``need`` is "manage": 403, and the denial is audited.
    ``queryset`` (e.g. ``SecretKey.objects.with_grants()``) adds what the caller reads.
    """
    keys = queryset if queryset is not None else SecretKey.objects.all()
    try:
        secret_key = keys.for_user(user).get(pk=_as_uuid(secret_id))
    except SecretKey.DoesNotExist:
        raise Http404("No such secret key.") from None
    check_secret(user, secret_key, need)
    return secret_key


def can_use(user: AnyUser, secret_key: SecretKey) -> bool:
    return _rights(user, secret_key)[0]


def can_manage(user: AnyUser, secret_key: SecretKey) -> bool:
    return _rights(user, secret_key)[1]


def rights(user: AnyUser, secret_key: SecretKey) -> set[Need]:
    """Both answers in one query: {"use", "manage"}, {"use"} or nothing."""
    use, manage = _rights(user, secret_key)
    return {need for need, held in (("use", use), ("manage", manage)) if held}


def _rights(user: AnyUser, secret_key: SecretKey) -> tuple[bool, bool]:
    if is_superuser(user):
        return True, True
    rights = (
        SecretKey.objects.for_user(user)
        .filter(pk=secret_key.pk)
        .values_list("can_use", "can_manage")
        .first()
    )
    return rights or (False, False)


def check_secret(user: AnyUser, secret_key: SecretKey, need: Need) -> None:
    """Raise 404/403 unless ``user`` may ``need`` the key (annotations used when present)."""
    if hasattr(secret_key, "can_manage"):
        use, manage = secret_key.can_use, secret_key.can_manage
    else:
        use, manage = _rights(user, secret_key)
    if not use and not manage:
        raise Http404("No such secret key.")
    if need == "manage" and not manage:
        audit.record_denial(user, secret_key, need)
        raise PermissionDenied("You may use this secret key but not manage it.")


def require_editor(user: AnyUser, organization: Organization | None = None) -> Membership:
    """Members and admins create keys; viewers may not (403), outsiders get 404."""
    membership = require_membership(user, organization.pk if organization else None)
    if not may_edit(user):
        raise PermissionDenied("Viewers cannot create or change secret keys.")
    return membership


def require_admin(user: AnyUser, organization: Organization) -> Membership | None:
    """Only the organization's admins (and superusers) manage members and groups."""
    if administers(user, organization.pk):
        return get_membership(user)
    require_membership(user, organization.pk)  # outsiders: 404
    raise PermissionDenied("Only organization admins can do this.")


def require_membership(user: AnyUser, organization_id: int | None = None) -> Membership:
    """The user's membership: 404 for a non-member and, given an organization, for a
    member of another one (its existence does not leak)."""
    membership = get_membership(user)
    if membership is None or (
        organization_id is not None and membership.organization_id != organization_id
    ):
        raise Http404("No such organization.")
    return membership


def require_signed_in_member(user: AnyUser) -> Membership:
    """Pages: a signed-in user who belongs to no organization has nothing to see (403)."""
    membership = get_membership(user)
    if membership is None:
        raise PermissionDenied("You are not a member of an organization.")
    return membership


MAX_ID = 2**63 - 1


def as_id(value: object) -> int | None:
    """A database id from a URL or payload, or None when it cannot be one."""
    if isinstance(value, bool):
        return None
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if 1 <= number <= MAX_ID else None


def get_group_for_user(user: AnyUser, group_id: object) -> OrganizationGroup:
    membership = get_membership(user)
    group_id = as_id(group_id)
    if membership is None or group_id is None:
        raise Http404("No such group.")
    try:
        return (
            OrganizationGroup.objects.select_related("group", "organization")
            .prefetch_related("group__user_set")
            .get(pk=group_id, organization_id=membership.organization_id)
        )
    except OrganizationGroup.DoesNotExist:
        raise Http404("No such group.") from None


def get_member_for_user(user: AnyUser, user_id: object) -> Membership:
    """A member of the user's organization, by the member's user id."""
    membership = get_membership(user)
    user_id = as_id(user_id)
    if membership is None or user_id is None:
        raise Http404("No such member.")
    try:
        return Membership.objects.select_related("user", "organization").get(
            user_id=user_id, organization_id=membership.organization_id
        )
    except Membership.DoesNotExist:
        raise Http404("No such member.") from None


# --- Workflows and runs ------------------------------------------------------------------
# A run uses the rights of whoever runs it, while its steps may have been shaped by someone
# else: whoever changes a workflow, or reads what a run of it produced, must be trusted
# with every key it holds (no confused deputy). Keys are named by id only: workflows are
# another app's models, and this module decides from the keys alone.


@dataclass(frozen=True)
class KeysInView:
    """What one user may know of some keys of their organization."""

    names: Mapping[uuid.UUID, str]  # the keys they may Use: their names are theirs to see
    forbidden: frozenset[uuid.UUID]  # keys that exist and that they may not Use

    def may_read_run_outputs(self, run_secret_ids: Iterable[object]) -> bool:
        """Every member sees that a run happened (who, when, status, its steps' names);
        its inputs, outputs and errors only those who may Use every key it used: what a
        key fetched or produced is as much the key's as its value."""
        return self.forbidden.isdisjoint(uuid.UUID(str(secret_id)) for secret_id in run_secret_ids)


def keys_in_view(
    user: AnyUser, organization_id: int, secret_ids: Iterable[uuid.UUID]
) -> KeysInView:
    """Of these keys, those that exist in the organization: which the user may Use (with
    their names) and which not. Deleted keys are in neither: they protect nothing any
    more. One query, none without ids."""
    secret_ids = set(secret_ids)
    if not secret_ids:
        return KeysInView({}, frozenset())
    keys = SecretKey.objects.filter(organization_id=organization_id, pk__in=secret_ids)
    if not is_member(user, organization_id):
        return KeysInView({}, frozenset(keys.values_list("pk", flat=True)))
    usable = SecretKey.objects.for_user(user).filter(pk=OuterRef("pk"))
    names: dict[uuid.UUID, str] = {}
    forbidden: set[uuid.UUID] = set()
    rows = keys.annotate(may_use=Exists(usable)).values_list("pk", "name", "may_use")
    for secret_id, name, may_use in rows:
        if may_use:
            names[secret_id] = name
        else:
            forbidden.add(secret_id)
    return KeysInView(names, frozenset(forbidden))


def may_change_workflow(
    user: AnyUser, organization_id: int, secret_ids: Iterable[uuid.UUID]
) -> bool:
    """Editors (admins, members) of the organization change a workflow only while they
    may Use every key it references: before the change and after it (pass the union)."""
    if not (may_edit(user) and is_member(user, organization_id)):
        return False
    return not keys_in_view(user, organization_id, secret_ids).forbidden


class WorkflowChangeRefused(PermissionDenied):
    """A 403 for a workflow change by an editor who may not Use some of its keys.

    The services raise it from inside their transaction and call ``record`` once it has
    rolled back, so the denial is audited (one ``denied`` event per key, naming the
    workflow) without being undone with the change."""

    def __init__(
        self, message: str, user: AnyUser, workflow_id: int, forbidden: Iterable[uuid.UUID]
    ) -> None:
        super().__init__(message)
        self.user, self.workflow_id, self.forbidden = user, workflow_id, frozenset(forbidden)

    def record(self) -> None:
        for secret_key in SecretKey.objects.filter(pk__in=self.forbidden):
            audit.record_event(
                self.user,
                AuditAction.DENIED,
                secret_key,
                {"needed": "use", "workflow_id": self.workflow_id},
            )


def require_workflow_change(user: AnyUser, workflow: Any, secret_ids: Iterable[uuid.UUID]) -> None:
    """403 unless ``user`` may change ``workflow`` (see ``may_change_workflow``), with a
    message that names who can help and no key."""
    require_membership(user, workflow.organization_id)
    if not may_edit(user):
        raise PermissionDenied("Viewers can run workflows but not change them.")
    secret_ids = set(secret_ids)
    forbidden = keys_in_view(user, workflow.organization_id, secret_ids).forbidden
    if forbidden:
        message = workflow_change_refusal(workflow, secret_ids)
        raise WorkflowChangeRefused(message, user, workflow.pk, forbidden)


def workflow_change_refusal(workflow: Any, secret_ids: Iterable[uuid.UUID]) -> str:
    """Why a member may not change a workflow, and whom to ask (names no key)."""
    secret_ids = set(secret_ids)
    admins = list(
        Membership.objects.filter(
            organization_id=workflow.organization_id, role=Role.ADMIN, user__is_active=True
        )
        .order_by("user__username")
        .values_list("user__username", flat=True)[:3]
    )
    helpers = [f"an organization admin ({', '.join(admins)})"] if admins else []
    creator = workflow.created_by
    if (
        creator is not None
        and creator.is_active
        and creator.get_username() not in admins
        and may_change_workflow(creator, workflow.organization_id, secret_ids)
    ):
        helpers.insert(0, f"its creator {creator.get_username()}")
    ask = f" Ask {' or '.join(helpers)} to make the change." if helpers else ""
    return (
        "You cannot change this workflow: it uses secret keys you may not use, and a run "
        f"uses the rights of whoever runs it.{ask}"
    )
