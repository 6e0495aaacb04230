"""Django admin for organization admins: their own organization only; superusers see all.

Organization admins are staff without any global model permission, so every ModelAdmin
answers its permissions by asking ``secretsapp.access`` (one line each), and scopes its
queryset to the user's organization. Every write goes through ``secretsapp.services`` (see
``secretsapp.forms``), so the audit log is written in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import construct_change_message, quote
from django.contrib.admin.widgets import RelatedFieldWidgetWrapper
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.text import capfirst
from django.views.decorators.debug import sensitive_post_parameters

from secretsapp import access, services
from secretsapp.access import is_superuser, organization_of
from secretsapp.forms import (
    GrantFormSet,
    GroupGrantForm,
    MemberAddForm,
    MemberRoleForm,
    OrganizationForm,
    OrganizationGroupForm,
    SecretKeyForm,
    UserGrantForm,
)
from secretsapp.models import (
    AuditEvent,
    Membership,
    Organization,
    OrganizationGroup,
    SecretKey,
    SecretKeyGroupObjectPermission,
    SecretKeyUserObjectPermission,
    get_membership,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser


def administers(user: AnyUser, obj: Model | None = None) -> bool:
    """Superusers administer everything; an org admin their organization and its objects."""
    return access.administers(user, obj.organization_id if obj is not None else None)


def organization_for(user: AnyUser, obj: Model | None = None) -> Organization | None:
    """Whose members and groups a form offers: the object's organization, else the admin's.

    None for a superuser adding an object: they pick its organization in the form.
    """
    if obj is not None:
        return obj.organization
    return None if is_superuser(user) else organization_of(user)


class OrganizationScopedAdmin(admin.ModelAdmin):
    """Rows of the signed-in admin's organization only; superusers see every organization."""

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if is_superuser(request.user):
            return queryset
        if not access.is_admin(request.user):
            return queryset.none()
        return queryset.filter(organization_id=get_membership(request.user).organization_id)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Model:
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            # Django would redirect to the index with "doesn't exist"; a foreign object must
            # answer exactly like a missing one, and that is a 404.
            raise Http404(f"No {self.opts.verbose_name} with this id.")
        return obj

    def has_module_permission(self, request: HttpRequest) -> bool:
        return administers(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request.user, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return administers(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request.user, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request.user, obj)

    # Superusers see several organizations at once, so their lists say whose each row is.

    def get_list_display(self, request: HttpRequest) -> tuple[str, ...]:
        list_display = tuple(super().get_list_display(request))
        return (*list_display, "organization") if is_superuser(request.user) else list_display

    def get_list_filter(self, request: HttpRequest) -> tuple[Any, ...]:
        list_filter = tuple(super().get_list_filter(request))
        return (*list_filter, "organization") if is_superuser(request.user) else list_filter

    def get_list_select_related(self, request: HttpRequest) -> tuple[str, ...]:
        related = tuple(super().get_list_select_related(request) or ())
        return (*related, "organization") if is_superuser(request.user) else related


def _refusal_shown_as_message(action: Callable) -> Callable:
    """Run an admin action in a transaction; a service's refusal undoes it and is shown."""

    @functools.wraps(action)
    def run(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> Any:
        try:
            # Django logs the deletions before deleting: a refusal must undo those log
            # entries and every deletion done before it.
            with transaction.atomic():
                return action(model_admin, request, queryset)
        except ValidationError as error:
            model_admin.message_user(request, " ".join(error.messages), messages.ERROR)
            return None

    return run


class SavedByFormMixin:
    """For admins whose form (``secretsapp.forms.ServiceForm``) saves while it validates."""

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        """Nothing left to write: the form saved ``obj`` through its service when validated."""
        if not form.saved:
            raise RuntimeError("The admin saved a form whose service call did not run.")

    def save_related(
        self, request: HttpRequest, form: Any, formsets: Iterable[Any], change: bool
    ) -> None:
        """Nothing left to write: inline rows are part of the form's service call."""


class ServiceAdmin(SavedByFormMixin, OrganizationScopedAdmin):
    """Saves and deletes through the services; the form saves while validating."""

    def get_form(
        self, request: HttpRequest, obj: Model | None = None, change: bool = False, **kwargs: Any
    ) -> type[Any]:
        form = super().get_form(request, obj, change=change, **kwargs)
        # modelform_factory made this class for this request: tell it who acts, and where.
        form.actor = request.user
        form.organization_scope = organization_for(request.user, obj)
        return form

    def delete_through_service(self, user: AnyUser, obj: Model) -> None:
        raise NotImplementedError

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        self.delete_through_service(request.user, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        with transaction.atomic():
            for obj in queryset:
                self.delete_through_service(request.user, obj)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as error:
            # The service refused (e.g. removing the last admin). The view's transaction,
            # log entry included, was rolled back; say why on the object's page.
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return HttpResponseRedirect(
                reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                    args=[quote(object_id)],
                    current_app=self.admin_site.name,
                )
            )

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            function, name, description = actions["delete_selected"]
            actions["delete_selected"] = (_refusal_shown_as_message(function), name, description)
        return actions


# --- Secret keys -------------------------------------------------------------------------


class GrantInline(admin.TabularInline):
    """Grant rows of a key; the key form saves them all at once through the service."""

    formset = GrantFormSet
    extra = 1
    principal_field: str

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("permission", self.principal_field)

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        # No "add/change user or group" popups: the auth admin would make principals that
        # belong to no organization, bypassing the services.
        if formfield is not None and isinstance(formfield.widget, RelatedFieldWidgetWrapper):
            formfield.widget = formfield.widget.widget
        return formfield

    def get_formset(self, request: HttpRequest, obj: SecretKey | None = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        # inlineformset_factory made this class for this request; it carries the organization.
        formset.organization = organization_for(request.user, obj)
        return formset

    # The inline is part of the key's page: whoever administers the key edits its grants.

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request.user, obj)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request.user, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request.user, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return administers(request.user, obj)


class UserGrantInline(GrantInline):
    model = SecretKeyUserObjectPermission
    form = UserGrantForm
    principal_field = "user"
    fields = ("user", "level")
    verbose_name = "grant to a user"
    verbose_name_plural = "grants to users"


class GroupGrantInline(GrantInline):
    model = SecretKeyGroupObjectPermission
    form = GroupGrantForm
    principal_field = "group"
    fields = ("group", "level")
    verbose_name = "grant to a group"
    verbose_name_plural = "grants to groups"


SECRET_KEY_HISTORY_FIELDS = (
    "version",
    "created_by",
    "created_at",
    "updated_at",
    "value_updated_at",
    "last_used_at",
)


@admin.register(SecretKey)
class SecretKeyAdmin(ServiceAdmin):
    form = SecretKeyForm
    inlines = (UserGrantInline, GroupGrantInline)
    # Never part of any form: the value is write-only, through SecretKeyForm.new_value.
    exclude = ("value",)
    list_display = ("name", "access", "version", "created_by", "updated_at", "last_used_at")
    list_filter = ("access",)
    list_select_related = ("created_by",)
    search_fields = ("name",)
    ordering = ("name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("organization", "created_by")

    def get_fieldsets(self, request: HttpRequest, obj: SecretKey | None = None) -> list[Any]:
        fields = ["name", "new_value", "access"]
        if is_superuser(request.user):
            fields.insert(0, "organization")
        if obj is None:
            return [(None, {"fields": fields})]
        return [(None, {"fields": fields}), ("History", {"fields": SECRET_KEY_HISTORY_FIELDS})]

    def get_readonly_fields(self, request: HttpRequest, obj: SecretKey | None = None) -> Any:
        # A key never moves to another organization.
        return () if obj is None else ("organization", *SECRET_KEY_HISTORY_FIELDS)

    @method_decorator(sensitive_post_parameters("new_value"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(*args, **kwargs)

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Iterable[Any], add: bool
    ) -> list[dict[str, Any]]:
        # The grant rows are not saved one by one (the service replaces the whole list), so
        # the log names the grants as one changed field.
        message = construct_change_message(form, [], add)
        if not add and any(formset.has_changed() for formset in formsets):
            message.append({"changed": {"fields": ["Grants"]}})
        return message

    def get_deleted_objects(
        self, objs: Iterable[SecretKey], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        # Django names each cascading grant row by its __str__, which loads the row's key
        # (value included) once per row; describe the grants from one prefetch instead.
        secret_keys = (
            SecretKey.objects.filter(pk__in=[secret_key.pk for secret_key in objs])
            .with_grants()
            .order_by("name")
        )
        to_delete: list[Any] = []
        grant_count = 0
        for secret_key in secret_keys:
            url = reverse(
                "admin:secretsapp_secretkey_change",
                args=[quote(secret_key.pk)],
                current_app=self.admin_site.name,
            )
            to_delete.append(
                format_html(
                    '{}: <a href="{}">{}</a>', capfirst(self.opts.verbose_name), url, secret_key
                )
            )
            grants = [
                f"Grant: {grant.level} to {grant.principal_type} {grant.principal_name}"
                for grant in secret_key.grants
            ]
            grant_count += len(grants)
            if grants:
                to_delete.append(grants)
        model_count = {str(self.opts.verbose_name_plural): len(secret_keys)}
        if grant_count:
            model_count["grants"] = grant_count
        return to_delete, model_count, set(), []

    def delete_through_service(self, user: AnyUser, obj: SecretKey) -> None:
        services.delete_secret_key(user, obj)


# --- Members and groups ------------------------------------------------------------------


@admin.register(Membership)
class MembershipAdmin(ServiceAdmin):
    list_display = ("username", "email", "role")
    list_filter = ("role",)
    list_select_related = ("user",)
    search_fields = ("user__username", "user__email")
    ordering = ("user__username",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("user", "organization")

    @admin.display(ordering="user__username")
    def username(self, membership: Membership) -> str:
        return membership.user.get_username()

    @admin.display(ordering="user__email")
    def email(self, membership: Membership) -> str:
        return membership.user.email

    def get_form(
        self,
        request: HttpRequest,
        obj: Membership | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> type[Any]:
        # Adding makes a new user account; a membership's only editable field is its role.
        kwargs["form"] = MemberAddForm if obj is None else MemberRoleForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Membership | None = None) -> list[Any]:
        fields = ["username", "email", "role"] if obj else ["username", "email", "password", "role"]
        if is_superuser(request.user):
            fields.insert(0, "organization")
        return [(None, {"fields": fields})]

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> Any:
        return () if obj is None else ("organization", "username", "email")

    @method_decorator(sensitive_post_parameters("password"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(*args, **kwargs)

    def delete_through_service(self, user: AnyUser, obj: Membership) -> None:
        services.remove_member(user, obj)


@admin.register(OrganizationGroup)
class OrganizationGroupAdmin(ServiceAdmin):
    form = OrganizationGroupForm
    list_display = ("name", "member_count")
    search_fields = ("name",)
    ordering = ("name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("organization", "group")
            .annotate(member_count=Count("group__user"))
        )

    @admin.display(description="members", ordering="member_count")
    def member_count(self, organization_group: OrganizationGroup) -> int:
        return organization_group.member_count

    def get_fieldsets(
        self, request: HttpRequest, obj: OrganizationGroup | None = None
    ) -> list[Any]:
        fields = ["name", "members"]
        if is_superuser(request.user):
            fields.insert(0, "organization")
        return [(None, {"fields": fields})]

    def get_readonly_fields(
        self, request: HttpRequest, obj: OrganizationGroup | None = None
    ) -> Any:
        return () if obj is None else ("organization",)

    def delete_through_service(self, user: AnyUser, obj: OrganizationGroup) -> None:
        services.delete_group(user, obj)


# --- Audit log ---------------------------------------------------------------------------


@admin.register(AuditEvent)
class AuditEventAdmin(OrganizationScopedAdmin):
    """Append-only: admins read it, nobody adds, changes or deletes through the admin."""

    list_display = ("created_at", "action", "secret_key_name", "actor_name", "changes")
    list_filter = ("action",)
    search_fields = ("secret_key_name",)
    fields = ("created_at", "action", "secret_key_name", "secret_key_id", "actor_name", "changes")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# --- Organizations (superusers) ----------------------------------------------------------


@admin.register(Organization)
class OrganizationAdmin(SavedByFormMixin, admin.ModelAdmin):
    """Superusers list organizations and create them with a first admin.

    No change or delete: there is no service to rename an organization, and deleting one
    would take every key and the audit log with it without a trace.
    """

    form = OrganizationForm
    list_display = ("name", "member_count", "created_at")
    search_fields = ("name",)
    ordering = ("name",)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, organization: Organization) -> int:
        return organization.member_count

    def get_fieldsets(self, request: HttpRequest, obj: Organization | None = None) -> list[Any]:
        if obj is None:
            return [(None, {"fields": ["name", "admin_username", "admin_email", "admin_password"]})]
        return [(None, {"fields": ["name", "created_at"]})]

    def get_readonly_fields(self, request: HttpRequest, obj: Organization | None = None) -> Any:
        return () if obj is None else ("name", "created_at")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request.user)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_superuser(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_superuser(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    @method_decorator(sensitive_post_parameters("admin_password"))
    def changeform_view(self, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().changeform_view(*args, **kwargs)
