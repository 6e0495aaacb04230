"""Serializers of /api/v1/ for members, groups, secret keys and the audit log.

They describe and type the payloads; every write goes to ``secretsapp.services``, which
checks permissions, validates and audits. A key's ``value`` is write-only: no serializer
ever reads it, so no response can contain it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from secretsapp import services
from secretsapp.access import MAX_ID
from secretsapp.api.conventions import StrictCharField
from secretsapp.models import (
    NAME_MAX_LENGTH,
    VALUE_MAX_LENGTH,
    Access,
    AuditAction,
    AuditEvent,
    Level,
    Membership,
    OrganizationGroup,
    PrincipalType,
    Role,
    SecretKey,
)

User = get_user_model()


class TokenRequestSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    password = StrictCharField(max_length=4096, trim_whitespace=False, write_only=True)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)


class WhoAmISerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    organization = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)


# --- Members -----------------------------------------------------------------------------


class MemberSerializer(serializers.ModelSerializer):
    """A member, identified by their user id (the id grants and groups use)."""

    id = serializers.IntegerField(source="user_id", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "username", "email", "role"]

    def update(self, instance: Membership, validated_data: dict[str, Any]) -> Membership:
        return services.change_role(self.context["request"].user, instance, validated_data["role"])


class MemberCreateSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    email = serializers.EmailField(max_length=254)
    password = StrictCharField(
        max_length=4096, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    def create(self, validated_data: dict[str, Any]) -> Membership:
        request = self.context["request"]
        return services.add_member(
            request.user, request.user.membership.organization, **validated_data
        )

    def to_representation(self, instance: Membership) -> dict[str, Any]:
        return MemberSerializer(instance, context=self.context).data


# --- Groups ------------------------------------------------------------------------------


class GroupSerializer(serializers.ModelSerializer):
    name = StrictCharField(max_length=NAME_MAX_LENGTH)
    members = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        required=False,
        max_length=10_000,
        help_text="User ids of the group's members.",
    )

    class Meta:
        model = OrganizationGroup
        fields = ["id", "name", "members"]

    def to_representation(self, instance: OrganizationGroup) -> dict[str, Any]:
        return {
            "id": instance.pk,
            "name": instance.name,
            # Read from the prefetched members (GroupViewSet.get_queryset).
            "members": sorted(user.pk for user in instance.group.user_set.all()),
        }

    def create(self, validated_data: dict[str, Any]) -> OrganizationGroup:
        request = self.context["request"]
        return services.create_group(
            request.user,
            request.user.membership.organization,
            name=validated_data["name"],
            members=validated_data.get("members", []),
        )

    def update(
        self, instance: OrganizationGroup, validated_data: dict[str, Any]
    ) -> OrganizationGroup:
        return services.update_group(
            self.context["request"].user,
            instance,
            name=validated_data.get("name", services.UNSET),
            members=validated_data.get("members", services.UNSET),
        )


# --- Secret keys -------------------------------------------------------------------------


class GrantSerializer(serializers.Serializer):
    principal_type = serializers.ChoiceField(choices=PrincipalType.choices)
    principal_id = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="A user id, or a group id, of this organization."
    )
    principal_name = serializers.CharField(read_only=True)
    level = serializers.ChoiceField(choices=Level.choices)


class SecretKeySerializer(serializers.Serializer):
    """A key's metadata. ``value`` is accepted on writes and never returned."""

    id = serializers.UUIDField(read_only=True)
    name = StrictCharField(max_length=NAME_MAX_LENGTH)
    value = StrictCharField(
        write_only=True,
        max_length=VALUE_MAX_LENGTH,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Write-only: stored encrypted and never returned by any endpoint.",
    )
    access = serializers.ChoiceField(choices=Access.choices, default=Access.TEAM)
    grants = GrantSerializer(many=True, required=False, max_length=1_000)
    can_use = serializers.BooleanField(read_only=True)
    can_manage = serializers.BooleanField(read_only=True)
    version = serializers.IntegerField(read_only=True)
    created_by = serializers.IntegerField(source="created_by_id", read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    value_updated_at = serializers.DateTimeField(read_only=True)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def to_representation(self, secret_key: SecretKey) -> dict[str, Any]:
        # What DRF's generic field-by-field loop returns (a test compares the two), built
        # directly: a page of 50 keys serializes in half the time.
        timestamp = self.fields["created_at"].to_representation  # None stays None
        return {
            "id": str(secret_key.id),
            "name": secret_key.name,
            "access": secret_key.access,
            "grants": [grant.as_dict() for grant in secret_key.grants],
            "can_use": bool(secret_key.can_use),
            "can_manage": bool(secret_key.can_manage),
            "version": secret_key.version,
            "created_by": secret_key.created_by_id,
            "created_at": timestamp(secret_key.created_at),
            "updated_at": timestamp(secret_key.updated_at),
            "value_updated_at": timestamp(secret_key.value_updated_at),
            "last_used_at": timestamp(secret_key.last_used_at),
        }

    def create(self, validated_data: dict[str, Any]) -> SecretKey:
        return services.create_secret_key(
            self.context["request"].user,
            name=validated_data["name"],
            value=validated_data["value"],
            access_level=validated_data.get("access", Access.TEAM),
            grants=[dict(grant) for grant in validated_data.get("grants", [])],
        )

    def update(self, instance: SecretKey, validated_data: dict[str, Any]) -> SecretKey:
        grants = validated_data.get("grants", services.UNSET)
        return services.update_secret_key(
            self.context["request"].user,
            instance,
            name=validated_data.get("name", services.UNSET),
            value=validated_data.get("value", services.UNSET),
            access_level=validated_data.get("access", services.UNSET),
            grants=services.UNSET if grants is services.UNSET else [dict(g) for g in grants],
            expected_etag=self.context.get("if_match"),
        )


class SecretKeyWriteResultSerializer(SecretKeySerializer):
    warnings = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="E.g. a value too short to be redacted reliably from run outputs.",
    )


class SecretKeyAccessLostSerializer(serializers.Serializer):
    """A PATCH that took away the caller's own access: saved, but no longer theirs to see."""

    detail = serializers.CharField(read_only=True)
    id = serializers.UUIDField(read_only=True)
    can_use = serializers.BooleanField(read_only=True, help_text="Always false here.")
    can_manage = serializers.BooleanField(read_only=True, help_text="Always false here.")
    warnings = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="E.g. a value too short to be redacted reliably from run outputs.",
    )


class SecretKeyUsageSerializer(serializers.Serializer):
    """One action that references the key, with its workflow and the fields holding it."""

    workflow_id = serializers.IntegerField(source="action.workflow_id")
    workflow_name = serializers.CharField(source="action.workflow.name")
    action_id = serializers.IntegerField(source="action.id")
    action_name = serializers.CharField(source="action.name")
    action_position = serializers.IntegerField(source="action.position")
    fields = serializers.ListField(child=serializers.CharField())


# --- Audit -------------------------------------------------------------------------------


class AuditEventSerializer(serializers.ModelSerializer):
    action = serializers.ChoiceField(choices=AuditAction.choices, read_only=True)
    actor = serializers.IntegerField(source="actor_id", read_only=True, allow_null=True)
    secret = serializers.UUIDField(source="secret_key_id", read_only=True, allow_null=True)
    secret_name = serializers.CharField(source="secret_key_name", read_only=True)
    changes = serializers.SerializerMethodField()

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_name",
            "action",
            "secret",
            "secret_name",
            "changes",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "additionalProperties": True})
    def get_changes(self, event: AuditEvent) -> dict[str, Any]:
        return event.changes
