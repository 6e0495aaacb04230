"""/api/v1/ endpoints for authentication, members, groups, secret keys and the audit log.

Every queryset is scoped to the caller's organization, so another organization's objects
are 404. Permission questions go to ``secretsapp.access``; writes go to the services
through the serializers.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import authenticate
from django.db.models.functions import Lower
from django.http import Http404
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action as route
from rest_framework.filters import SearchFilter
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from secretsapp import access, services
from secretsapp.api.conventions import (
    WRITE_METHODS,
    IsOrganizationAdmin,
    IsOrganizationAdminOrReadOnly,
    IsOrganizationMember,
    organization_id,
)
from secretsapp.api.serializers import (
    AuditEventSerializer,
    GroupSerializer,
    MemberCreateSerializer,
    MemberSerializer,
    SecretKeyAccessLostSerializer,
    SecretKeySerializer,
    SecretKeyUsageSerializer,
    SecretKeyWriteResultSerializer,
    TokenRequestSerializer,
    TokenSerializer,
    WhoAmISerializer,
)
from secretsapp.api.throttles import FailedLoginByAddressThrottle, FailedLoginByUsernameThrottle
from secretsapp.models import AuditEvent, Membership, OrganizationGroup, SecretKey, get_membership
from workflows.services import usage_of

IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="The ETag from a previous read; the write fails with 412 if the key changed since.",
)


class ObtainTokenView(APIView):
    """Exchange a username and password for an API token (``Authorization: Token …``)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [FailedLoginByAddressThrottle, FailedLoginByUsernameThrottle]

    def get_throttles(self) -> list:
        # Kept so a failed sign-in can be recorded on the same throttles that checked it.
        if not hasattr(self, "_throttles"):
            self._throttles = super().get_throttles()
        return self._throttles

    @extend_schema(request=TokenRequestSerializer, responses={200: TokenSerializer}, auth=[])
    def post(self, request, *args: Any, **kwargs: Any) -> Response:
        serializer = TokenRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = authenticate(
            request,
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        if user is None:
            for throttle in self.get_throttles():
                throttle.record_failure()
            raise exceptions.ValidationError(
                {"detail": "Unable to sign in with these credentials."}
            )
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class WhoAmIView(APIView):
    """Who the token or session belongs to: the cheapest authenticated call."""

    permission_classes = [IsAuthenticated, IsOrganizationMember]

    @extend_schema(responses={200: WhoAmISerializer})
    def get(self, request, *args: Any, **kwargs: Any) -> Response:
        membership = get_membership(request.user)
        return Response(
            {
                "id": request.user.pk,
                "username": request.user.get_username(),
                "organization": membership.organization.name,
                "role": membership.role,
            }
        )


@extend_schema_view(
    create=extend_schema(request=MemberCreateSerializer, responses={201: MemberSerializer}),
)
class MemberViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Members of the caller's organization; admins add, change roles and remove."""

    permission_classes = [IsAuthenticated, IsOrganizationAdminOrReadOnly]
    http_method_names = WRITE_METHODS
    lookup_field = "user_id"
    lookup_url_kwarg = "id"
    queryset = Membership.objects.none()

    def get_queryset(self):
        return (
            Membership.objects.filter(organization_id=organization_id(self.request))
            .select_related("user")
            .order_by("user__username")
        )

    def get_serializer_class(self):
        return MemberCreateSerializer if self.action == "create" else MemberSerializer

    def get_object(self) -> Membership:
        membership = access.get_member_for_user(self.request.user, self.kwargs["id"])
        self.check_object_permissions(self.request, membership)
        return membership

    def perform_destroy(self, instance: Membership) -> None:
        services.remove_member(self.request.user, instance)


class GroupViewSet(viewsets.ModelViewSet):
    """Groups of the caller's organization, with their members' user ids."""

    permission_classes = [IsAuthenticated, IsOrganizationAdminOrReadOnly]
    http_method_names = WRITE_METHODS
    serializer_class = GroupSerializer
    queryset = OrganizationGroup.objects.none()

    def get_queryset(self):
        return (
            OrganizationGroup.objects.filter(organization_id=organization_id(self.request))
            .select_related("group", "organization")
            .prefetch_related("group__user_set")
            .order_by(Lower("name"), "id")
        )

    def get_object(self) -> OrganizationGroup:
        group = access.get_group_for_user(self.request.user, self.kwargs["pk"])
        self.check_object_permissions(self.request, group)
        return group

    def perform_destroy(self, instance: OrganizationGroup) -> None:
        services.delete_group(self.request.user, instance)


ACCESS_LOST = "Saved. You no longer have access to this secret key."

PATCH_RESULT = OpenApiResponse(
    PolymorphicProxySerializer(
        component_name="SecretKeyPatchResult",
        serializers=[SecretKeyWriteResultSerializer, SecretKeyAccessLostSerializer],
        resource_type_field_name=None,
    ),
    description=(
        "Saved. The body is the key as the caller now sees it (`can_manage` is false if the "
        "change took their Manage away), or, if the change took away even their Use, "
        f'`{{detail: "{ACCESS_LOST}", id, can_use: false, can_manage: false, warnings}}`.'
    ),
)


@extend_schema_view(
    partial_update=extend_schema(parameters=[IF_MATCH], responses={200: PATCH_RESULT}),
    destroy=extend_schema(parameters=[IF_MATCH]),
)
class SecretKeyViewSet(viewsets.ModelViewSet):
    """Keys the caller may Use or Manage. Values go in, never come out."""

    permission_classes = [IsAuthenticated, IsOrganizationMember]
    http_method_names = WRITE_METHODS
    serializer_class = SecretKeySerializer
    filter_backends = [SearchFilter]
    search_fields = ["name"]
    queryset = SecretKey.objects.none()

    def get_queryset(self):
        return (
            SecretKey.objects.for_user(self.request.user)
            .with_grants()
            .order_by(Lower("name"), "id")
        )

    def get_object(self) -> SecretKey:
        need = "manage" if self.action in ("partial_update", "destroy", "usage") else "use"
        # Only a read shows the grants; a write answers with the key read afresh.
        grants = SecretKey.objects.with_grants() if self.action == "retrieve" else None
        return access.get_secret_for_user(
            self.request.user, self.kwargs["pk"], need=need, queryset=grants
        )

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "if_match": self._if_match()}

    def _if_match(self) -> str | None:
        header = self.request.headers.get("If-Match")
        return header.strip() if header else None

    def _written(self, secret_key: SecretKey) -> SecretKey:
        """The key as a write left it, with can_use/can_manage and grants as lists show."""
        return access.get_secret_for_user(
            self.request.user, secret_key.pk, queryset=SecretKey.objects.with_grants()
        )

    def _respond(
        self,
        secret_key: SecretKey,
        status_code: int = status.HTTP_200_OK,
        warnings: list[str] | None = None,
    ) -> Response:
        data = self.get_serializer(secret_key).data
        if warnings is not None:  # writes of a value answer with its warnings
            data["warnings"] = list(warnings)
        response = Response(data, status=status_code)
        response["ETag"] = secret_key.etag
        return response

    def retrieve(self, request, *args: Any, **kwargs: Any) -> Response:
        return self._respond(self.get_object())

    @extend_schema(responses={201: SecretKeyWriteResultSerializer})
    # Every frame below holds the value (the serializer, DRF's save, its data): error
    # reports show none of their variables. The services name their own.
    @method_decorator(sensitive_variables())
    def create(self, request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        warnings = services.value_warnings(serializer.validated_data["value"])
        return self._respond(self._written(serializer.save()), status.HTTP_201_CREATED, warnings)

    @method_decorator(sensitive_variables())
    def update(self, request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(self.get_object(), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        value = serializer.validated_data.get("value")
        warnings = services.value_warnings(value) if value is not None else []
        written = serializer.save()
        try:
            secret_key = self._written(written)
        except Http404:
            # The manager took away their own access. The change is saved (and audited): a
            # 404 would say the key does not exist, and invite a retry of a done write.
            return Response(
                {
                    "detail": ACCESS_LOST,
                    "id": str(written.pk),
                    "can_use": False,
                    "can_manage": False,
                    "warnings": warnings,
                }
            )
        return self._respond(secret_key, warnings=warnings)

    def perform_destroy(self, instance: SecretKey) -> None:
        services.delete_secret_key(self.request.user, instance, expected_etag=self._if_match())

    @extend_schema(responses={200: SecretKeyUsageSerializer(many=True)})
    @route(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def usage(self, request, pk: str | None = None) -> Response:
        """The actions (and their workflows) that reference this key — before a rename or
        a delete, to see what it affects. Needs Manage."""
        references = usage_of(self.get_object())
        return Response(SecretKeyUsageSerializer(references, many=True).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "secret", OpenApiTypes.UUID, description="Only events about this secret key."
            )
        ]
    )
)
class AuditEventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The organization's audit log, newest first. Admins only."""

    permission_classes = [IsAuthenticated, IsOrganizationAdmin]
    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.none()

    def get_queryset(self):
        events = AuditEvent.objects.filter(organization_id=organization_id(self.request))
        secret = self.request.query_params.get("secret")
        if secret:
            try:
                events = events.filter(secret_key_id=uuid.UUID(secret))
            except ValueError:
                raise exceptions.ValidationError(
                    {"secret": "Enter a secret key id (UUID)."}
                ) from None
        return events.order_by("-created_at", "-id")
