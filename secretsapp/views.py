"""Pages and htmx partials for secret keys: the picker of the + menu, Create Secret Key,
Manage Secret Keys, and the audit log.

No view ever puts a value in a page: value inputs are password fields that are never
filled in, not even after a validation error. Every write goes through the services.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Lower
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from secretsapp import access, services
from secretsapp.models import (
    Access,
    AuditAction,
    AuditEvent,
    Membership,
    OrganizationGroup,
    SecretKey,
)
from workflows.models import SecretReference
from workflows.services import usage_of

PICKER_LIMIT = 50
KEYS_CHANGED = "secretKeysChanged"


def _search(request: HttpRequest):
    keys = SecretKey.objects.for_user(request.user)
    query = request.GET.get("q", "").strip()[:100]
    if query:
        keys = keys.filter(name__icontains=query)
    return keys.order_by(Lower("name"), "id"), query


# --- The + menu --------------------------------------------------------------------------


@login_required
def key_picker(request: HttpRequest) -> HttpResponse:
    """The keys the user may Use, first 50 by name, for "Insert a Secret Key"."""
    access.require_signed_in_member(request.user)
    keys, query = _search(request)
    # Rows of the three columns shown: values() also leaves can_manage out of the query.
    page = list(keys.values("id", "name", "access")[: PICKER_LIMIT + 1])
    for row in page:
        row["access_label"] = Access(row["access"]).label
    return render(
        request,
        "secretsapp/key_picker_menu.html",
        {"keys": page[:PICKER_LIMIT], "more": len(page) > PICKER_LIMIT, "query": query},
    )


@login_required
def key_names(request: HttpRequest) -> JsonResponse:
    """{id: name} of the given keys the user may use — what the chips show."""
    access.require_signed_in_member(request.user)
    ids = []
    for raw in request.GET.getlist("id")[:500]:
        try:
            ids.append(uuid.UUID(raw))
        except ValueError:
            continue
    return JsonResponse(SecretKey.objects.names_usable_by(request.user, ids))


# --- Create Secret Key -------------------------------------------------------------------


def _principals(membership: Membership) -> dict[str, list]:
    members = (
        Membership.objects.filter(organization_id=membership.organization_id)
        .select_related("user")
        .order_by("user__username")
    )
    groups = OrganizationGroup.objects.filter(organization_id=membership.organization_id).order_by(
        Lower("name")
    )
    return {
        "people": [
            (f"user:{member.user_id}", member.user.get_username(), member.role)
            for member in members
        ],
        "groups": [(f"group:{group.pk}", group.name) for group in groups],
    }


def _posted_grants(request: HttpRequest) -> list[dict[str, Any]]:
    grants = []
    principals = request.POST.getlist("grant-principal")
    levels = request.POST.getlist("grant-level")
    for principal, level in zip(principals, levels, strict=False):
        kind, _, raw_id = principal.partition(":")
        if not kind:
            continue
        grants.append(
            {
                "principal_type": kind,
                # Not a valid id stays as typed: the service refuses it with a 422.
                "principal_id": access.as_id(raw_id) or raw_id,
                "level": level,
            }
        )
    return grants


def _form_grants(grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"principal": f"{grant['principal_type']}:{grant['principal_id']}", "level": grant["level"]}
        for grant in grants
    ]


@login_required
@sensitive_post_parameters("value")
def key_create(request: HttpRequest) -> HttpResponse:
    membership = access.require_signed_in_member(request.user)
    context: dict[str, Any] = {
        "principals": _principals(membership),
        "form": {"name": "", "access": Access.TEAM, "grants": []},
        "errors": {},
        "can_create": access.may_edit(request.user),
    }
    if request.method != "POST":
        return render(request, "secretsapp/key_create_modal.html", context)
    grants = _posted_grants(request)
    access_level = request.POST.get("access", Access.TEAM)
    try:
        secret_key = services.create_secret_key(
            request.user,
            name=request.POST.get("name", ""),
            value=request.POST.get("value", ""),
            access_level=access_level,
            grants=grants,
        )
    except ValidationError as error:
        context["errors"] = error.message_dict
        # Everything typed comes back but the value: it is never sent back to the browser.
        context["form"] = {
            "name": request.POST.get("name", ""),
            "access": access_level,
            "grants": _form_grants(grants),
        }
        return render(request, "secretsapp/key_create_modal.html", context, status=422)
    warnings = services.value_warnings(request.POST.get("value", ""))
    response = render(
        request,
        "secretsapp/key_created.html",
        {"secret_key": secret_key, "warnings": warnings},
        status=201,
    )
    trigger_client_event(
        response, "secretKeyCreated", {"id": str(secret_key.pk), "name": secret_key.name}
    )
    return trigger_client_event(response, KEYS_CHANGED, {})


# --- Manage Secret Keys ------------------------------------------------------------------


def _key_rows(request: HttpRequest):
    keys, query = _search(request)
    used_in = (
        SecretReference.objects.filter(
            organization_id=OuterRef("organization_id"), secret_key_id=OuterRef("pk")
        )
        .values("secret_key_id")
        .annotate(count=Count("id"))
        .values("count")
    )
    rows = keys.annotate(used_in=Subquery(used_in, output_field=IntegerField())).only(
        "id", "name", "access", "version"
    )
    return Paginator(rows, 50).get_page(request.GET.get("page")), query


@login_required
def key_manage(request: HttpRequest) -> HttpResponse:
    """The Manage Secret Keys panel (or, with ?list=1, only its table: live search)."""
    access.require_signed_in_member(request.user)
    keys, query = _key_rows(request)
    template = (
        "secretsapp/key_table.html"
        if request.GET.get("list")
        else "secretsapp/key_manage_panel.html"
    )
    return render(
        request,
        template,
        {"keys": keys, "query": query, "can_create": access.may_edit(request.user)},
    )


@login_required
def key_page(request: HttpRequest) -> HttpResponse:
    access.require_signed_in_member(request.user)
    keys, query = _key_rows(request)
    return render(
        request,
        "secretsapp/key_list.html",
        {"keys": keys, "query": query, "can_create": access.may_edit(request.user), "nav": "keys"},
    )


def _detail(
    request: HttpRequest, secret_id: object, status: int = 200, **extra: Any
) -> HttpResponse:
    """The key's panel, read afresh (after a write, it shows what was saved)."""
    membership = access.require_signed_in_member(request.user)
    secret_key = access.get_secret_for_user(
        request.user,
        secret_id,
        queryset=SecretKey.objects.with_grants().select_related("created_by"),
    )
    context = {
        "secret_key": secret_key,
        "usage": usage_of(secret_key),
        "principals": _principals(membership) if secret_key.can_manage else None,
        "grants": _form_grants([grant.as_dict() for grant in secret_key.grants]),
        "errors": {},
        **extra,
    }
    return render(request, "secretsapp/key_detail.html", context, status=status)


@login_required
def key_detail(request: HttpRequest, secret_id: uuid.UUID) -> HttpResponse:
    return _detail(request, secret_id)


def _changed(response: HttpResponse) -> HttpResponse:
    return trigger_client_event(response, KEYS_CHANGED, {})


@login_required
@require_POST
def key_rename(request: HttpRequest, secret_id: uuid.UUID) -> HttpResponse:
    secret_key = access.get_secret_for_user(request.user, secret_id, need="manage")
    name = request.POST.get("name", "")
    if request.POST.get("confirm") != "yes":
        # First show what the rename affects, then ask.
        return _detail(request, secret_key.pk, confirm_rename=name)
    try:
        services.rename_secret_key(request.user, secret_key, name)
    except ValidationError as error:
        return _detail(
            request, secret_key.pk, status=422, errors=error.message_dict, rename_value=name
        )
    notice = "Renamed. Actions that use the key show the new name."
    return _changed(_detail(request, secret_key.pk, notice=notice))


@login_required
@require_POST
@sensitive_post_parameters("value")
@sensitive_variables("value")
def key_update_value(request: HttpRequest, secret_id: uuid.UUID) -> HttpResponse:
    secret_key = access.get_secret_for_user(request.user, secret_id, need="manage")
    value = request.POST.get("value", "")
    try:
        services.update_secret_value(request.user, secret_key, value)
    except ValidationError as error:
        return _detail(request, secret_key.pk, status=422, errors=error.message_dict)
    notice = "Value updated: the next runs use the new value. The old value is gone."
    return _changed(
        _detail(request, secret_key.pk, notice=notice, warnings=services.value_warnings(value))
    )


@login_required
@require_POST
def key_access(request: HttpRequest, secret_id: uuid.UUID) -> HttpResponse:
    secret_key = access.get_secret_for_user(request.user, secret_id, need="manage")
    try:
        services.change_secret_access(
            request.user,
            secret_key,
            access_level=request.POST.get("access", ""),
            grants=_posted_grants(request),
        )
    except ValidationError as error:
        return _detail(request, secret_key.pk, status=422, errors=error.message_dict)
    try:
        return _changed(_detail(request, secret_key.pk, notice="Access saved."))
    except Http404:
        # The manager took away their own access: back to the keys they still have.
        notice = f"Access saved. You no longer have access to “{secret_key.name}”."
        return _changed(_panel(request, notice))


@login_required
@require_POST
def key_delete(request: HttpRequest, secret_id: uuid.UUID) -> HttpResponse:
    secret_key = access.get_secret_for_user(request.user, secret_id, need="manage")
    if request.POST.get("confirm") != "yes":
        return _detail(request, secret_key.pk, confirm_delete=True)
    name = secret_key.name
    services.delete_secret_key(request.user, secret_key)
    return _changed(_panel(request, f"“{name}” deleted."))


def _panel(request: HttpRequest, notice: str) -> HttpResponse:
    """The Manage Secret Keys panel's list, with a notice about what just happened."""
    keys, _ = _key_rows(request)
    context = {
        "keys": keys,
        "query": "",
        "notice": notice,
        "can_create": access.may_edit(request.user),
    }
    return render(request, "secretsapp/key_manage_panel.html", context)


# --- Audit log ---------------------------------------------------------------------------


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    membership = access.require_signed_in_member(request.user)
    if not access.is_admin(request.user):
        raise PermissionDenied("Only organization admins can read the audit log.")
    events = AuditEvent.objects.filter(organization_id=membership.organization_id)
    selected = request.GET.get("secret", "")
    if selected:
        try:
            events = events.filter(secret_key_id=uuid.UUID(selected))
        except ValueError:
            raise Http404("No such secret key.") from None
    keys = SecretKey.objects.filter(organization_id=membership.organization_id).order_by(
        Lower("name")
    )
    page = Paginator(events.order_by("-created_at", "-id"), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "secretsapp/audit_log.html",
        {
            "events": page,
            "keys": keys.values("pk", "name"),
            "selected": selected,
            "actions": AuditAction,
            "nav": "audit",
        },
    )
