"""Forms of the admin. Each one saves through ``secretsapp.services``, never by itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from django import forms
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet
from django.db.models.fields import BLANK_CHOICE_DASH
from django.utils.functional import cached_property
from django.views.decorators.debug import sensitive_variables

from secretsapp import services
from secretsapp.models import (
    Level,
    Membership,
    Organization,
    OrganizationGroup,
    PrincipalType,
    SecretKey,
    SecretKeyGroupObjectPermission,
    SecretKeyUserObjectPermission,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

User = get_user_model()

# Where the grant formsets of a key form wait for it (see GrantFormSet.__init__).
GRANT_FORMSETS_ATTRIBUTE = "_admin_grant_formsets"


def organization_users(organization: Organization | None) -> QuerySet:
    """Users a form may offer: the organization's members, or every member for None."""
    users = User.objects.filter(membership__isnull=False)
    if organization is not None:
        users = users.filter(membership__organization=organization)
    return users.select_related("membership__organization").order_by("username")


def user_label(user: Any, organization: Organization | None) -> str:
    if organization is None:
        return f"{user.get_username()} ({user.membership.organization})"
    return user.get_username()


def organization_auth_groups(organization: Organization | None) -> QuerySet:
    """Auth groups backing the organization's groups (every organization's for None)."""
    groups = Group.objects.filter(organization_group__isnull=False)
    if organization is not None:
        groups = groups.filter(organization_group__organization=organization)
    return groups.select_related("organization_group__organization").order_by(
        "organization_group__name"
    )


def group_label(group: Group, organization: Organization | None) -> str:
    organization_group = group.organization_group
    if organization is None:
        return f"{organization_group.organization} / {organization_group.name}"
    return organization_group.name


class ServiceForm(forms.ModelForm):
    """A model form whose validation is the service call that saves it.

    The services validate and write in one transaction, and report bad input as a
    ``ValidationError`` with a field dict. Calling the service where a model form would run
    model validation (``_post_clean``) turns those errors into form errors, so the admin
    shows the page again with the errors and nothing saved. ``save()`` then only hands back
    what the service saved. The admin sets ``actor`` and ``organization_scope``.
    """

    actor: AbstractBaseUser | None = None
    # The organization whose members and groups the form offers; None when a superuser
    # adds an object and picks the organization (the service then checks the choices).
    organization_scope: Organization | None = None
    # Service error keys that are not field names of the form; None: a non-field error.
    service_field_names: ClassVar[dict[str, str | None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved = False

    @property
    def adding(self) -> bool:
        return self.instance._state.adding

    def save_through_service(self) -> Model:
        raise NotImplementedError

    def related_forms_are_valid(self) -> bool:
        """Whether rows saved in the same service call (inline formsets) are valid."""
        return True

    def _post_clean(self) -> None:
        # Not the model form's model validation: the service validates, and saving a
        # half-valid page would write part of what the user asked for.
        if self.errors or not self.related_forms_are_valid():
            return
        try:
            self.instance = self.save_through_service()
        except ValidationError as error:
            self._add_service_errors(error)
        else:
            self.saved = True

    def _add_service_errors(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for key, messages in error.message_dict.items():
            field = self.service_field_names.get(key, key)
            self.add_error(field if field in self.fields else None, messages)

    def save(self, commit: bool = True) -> Model:
        # The admin calls this as soon as the form itself is valid, before it checks the
        # inline rows: when those are invalid nothing was saved and this is not saved either.
        if self.errors:
            raise ValueError("The form did not validate, so the service saved nothing.")
        return self.instance


# --- Secret keys -------------------------------------------------------------------------


class SecretKeyForm(ServiceForm):
    # The stored value is write-only: it is never a field of this form, and what is typed
    # here is never rendered back, not even after a validation error.
    new_value = forms.CharField(
        label="New value",
        required=False,
        # Spaces are part of a secret: keep what was typed exactly.
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    service_field_names: ClassVar[dict[str, str | None]] = {"value": "new_value", "grants": None}

    class Meta:
        model = SecretKey
        fields = ["name", "access"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "new_value" in self.fields:
            new_value = self.fields["new_value"]
            new_value.required = self.adding
            new_value.help_text = (
                "Stored encrypted; it is never shown again."
                if self.adding
                else "Leave empty to keep the current value. The value is never shown."
            )

    def grant_formsets(self) -> list[GrantFormSet] | None:
        return vars(self.instance).get(GRANT_FORMSETS_ATTRIBUTE)

    def related_forms_are_valid(self) -> bool:
        return all(formset.is_valid() for formset in self.grant_formsets() or [])

    def grants(self) -> Any:
        """The complete list of grants in the rows, or UNSET when there are no rows."""
        formsets = self.grant_formsets()
        if formsets is None:
            return services.UNSET
        return [grant for formset in formsets for grant in formset.grants()]

    @sensitive_variables()
    def save_through_service(self) -> SecretKey:
        data = self.cleaned_data
        grants = self.grants()
        if self.adding:
            return services.create_secret_key(
                self.actor,
                name=data["name"],
                value=data["new_value"],
                access_level=data["access"],
                grants=[] if grants is services.UNSET else grants,
                organization=data.get("organization") or self.organization_scope,
            )
        return services.update_secret_key(
            self.actor,
            self.instance,
            name=data["name"],
            value=data["new_value"] or services.UNSET,
            access_level=data["access"],
            grants=grants,
        )


class GrantForm(forms.ModelForm):
    """One grant row: a principal (user or group) and a level."""

    principal_type: ClassVar[str]
    principal_field: ClassVar[str]

    level = forms.ChoiceField(choices=Level.choices, initial=Level.USE)

    def __init__(
        self,
        *args: Any,
        principal_queryset: QuerySet | None = None,
        principal_choices: list[tuple[Any, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["level"] = Level.from_codename(self.instance.permission.codename)
        field = self.fields.get(self.principal_field)
        if field is not None and principal_queryset is not None:
            field.queryset = principal_queryset
            field.choices = principal_choices

    @staticmethod
    def principal_queryset(organization: Organization | None) -> QuerySet:
        raise NotImplementedError

    @staticmethod
    def principal_label(principal: Any, organization: Organization | None) -> str:
        raise NotImplementedError

    @staticmethod
    def principal_id(principal: Any) -> int:
        return principal.pk

    def grant(self) -> dict[str, Any]:
        return {
            "principal_type": self.principal_type,
            "principal_id": self.principal_id(self.cleaned_data[self.principal_field]),
            "level": self.cleaned_data["level"],
        }


class UserGrantForm(GrantForm):
    principal_type = PrincipalType.USER.value
    principal_field = "user"

    class Meta:
        model = SecretKeyUserObjectPermission
        fields = ["user", "level"]

    principal_queryset = staticmethod(organization_users)
    principal_label = staticmethod(user_label)


class GroupGrantForm(GrantForm):
    principal_type = PrincipalType.GROUP.value
    principal_field = "group"

    class Meta:
        model = SecretKeyGroupObjectPermission
        fields = ["group", "level"]

    principal_queryset = staticmethod(organization_auth_groups)
    principal_label = staticmethod(group_label)

    @staticmethod
    def principal_id(principal: Group) -> int:
        # Grants name groups by their OrganizationGroup id, not the auth group's.
        return principal.organization_group.pk


class GrantFormSet(forms.BaseInlineFormSet):
    """The grant rows of one key for one kind of principal; never saved row by row."""

    form: type[GrantForm]
    # Set by the inline: whose users or groups the rows may name.
    organization: Organization | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The key form saves name, value, access and grants in one service call, but the
        # admin hands it no formsets: they meet on the key instance that both are given.
        vars(self.instance).setdefault(GRANT_FORMSETS_ATTRIBUTE, []).append(self)

    @cached_property
    def principal_queryset(self) -> QuerySet:
        return self.form.principal_queryset(self.organization)

    @cached_property
    def principal_choices(self) -> list[tuple[Any, str]]:
        # Listed once for the whole formset; otherwise every row's select runs a query.
        return [
            *BLANK_CHOICE_DASH,
            *(
                (principal.pk, self.form.principal_label(principal, self.organization))
                for principal in self.principal_queryset
            ),
        ]

    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        return {
            **super().get_form_kwargs(index),
            "principal_queryset": self.principal_queryset,
            "principal_choices": self.principal_choices,
        }

    def _construct_form(self, i: int, **kwargs: Any) -> forms.Form:
        form = super()._construct_form(i, **kwargs)
        if i < self.initial_form_count():
            # Every row belongs to the key being edited; giving it that key spares rendering
            # (the row's __str__) a query per row, which would also load the key's value.
            form.instance.content_object = self.instance
        return form

    def grants(self) -> list[dict[str, Any]]:
        return [
            form.grant()
            for form in self.forms
            if form.cleaned_data and not self._should_delete_form(form)
        ]


# --- Members and groups ------------------------------------------------------------------


class MemberAddForm(ServiceForm):
    username = forms.CharField(max_length=150)
    email = forms.EmailField()
    password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    class Meta:
        model = Membership
        fields = ["role"]

    @sensitive_variables()
    def save_through_service(self) -> Membership:
        data = self.cleaned_data
        return services.add_member(
            self.actor,
            data.get("organization") or self.organization_scope,
            username=data["username"],
            email=data["email"],
            password=data["password"],
            role=data["role"],
        )


class MemberRoleForm(ServiceForm):
    class Meta:
        model = Membership
        fields = ["role"]

    def save_through_service(self) -> Membership:
        return services.change_role(self.actor, self.instance, self.cleaned_data["role"])


class OrganizationGroupForm(ServiceForm):
    members = forms.ModelMultipleChoiceField(
        queryset=User.objects.none(),
        required=False,
        widget=FilteredSelectMultiple("members", is_stacked=False),
    )

    class Meta:
        model = OrganizationGroup
        fields = ["name"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "members" in self.fields:
            members = self.fields["members"]
            members.queryset = organization_users(self.organization_scope)
            members.label_from_instance = lambda user: user_label(user, self.organization_scope)
            if not self.adding:
                self.initial["members"] = list(
                    self.instance.group.user_set.values_list("pk", flat=True)
                )

    def save_through_service(self) -> OrganizationGroup:
        data = self.cleaned_data
        if self.adding:
            return services.create_group(
                self.actor,
                data.get("organization") or self.organization_scope,
                name=data["name"],
                members=list(data["members"]),
            )
        return services.update_group(
            self.actor, self.instance, name=data["name"], members=list(data["members"])
        )


class OrganizationForm(ServiceForm):
    """A new organization with its first admin (superusers only)."""

    admin_username = forms.CharField(label="Admin username", max_length=150)
    admin_email = forms.EmailField(label="Admin email")
    admin_password = forms.CharField(
        label="Admin password",
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )

    service_field_names: ClassVar[dict[str, str | None]] = {
        "username": "admin_username",
        "email": "admin_email",
        "password": "admin_password",
    }

    class Meta:
        model = Organization
        fields = ["name"]

    @sensitive_variables()
    def save_through_service(self) -> Organization:
        data = self.cleaned_data
        return services.create_organization(
            data["name"],
            admin_username=data["admin_username"],
            admin_email=data["admin_email"],
            admin_password=data["admin_password"],
        )
