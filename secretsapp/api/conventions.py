"""What every endpoint of /api/v1/ shares: errors, permissions, pagination (throttles
are in ``secretsapp.api.throttles``).

Workflows' endpoints use the same classes, so a client meets one set of conventions.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from secretsapp.models import Role, get_membership
from secretsapp.services import StaleWrite


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The object changed since you read it; read it again and retry."
    default_code = "precondition_failed"


def exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: service validation errors are 400s with field errors, stale
    writes are 412s, and every error body has a ``detail`` field."""
    if isinstance(error, DjangoValidationError):
        error = exceptions.ValidationError(
            error.message_dict if hasattr(error, "error_dict") else {"detail": error.messages}
        )
    elif isinstance(error, StaleWrite):
        error = PreconditionFailed(str(error))
    response = drf_exception_handler(error, context)
    if response is None:
        return None
    if isinstance(response.data, list):
        response.data = {"detail": " ".join(str(item) for item in response.data)}
    elif isinstance(response.data, dict) and "detail" not in response.data:
        # Field errors stay at the top level (DRF's convention); detail summarises them.
        response.data = {"detail": "Invalid input.", **response.data}
    return response


# --- Permissions: one class per concern --------------------------------------------------


class IsOrganizationMember(BasePermission):
    """Signed in and a member of an organization (any role)."""

    message = "You are not a member of an organization."

    def has_permission(self, request, view) -> bool:
        return get_membership(request.user) is not None


class IsOrganizationAdminOrReadOnly(BasePermission):
    """Every member reads; only the organization's admins write."""

    message = "Only organization admins can do this."

    def has_permission(self, request, view) -> bool:
        membership = get_membership(request.user)
        if membership is None:
            return False
        return request.method in SAFE_METHODS or membership.role == Role.ADMIN


class IsOrganizationAdmin(BasePermission):
    message = "Only organization admins can do this."

    def has_permission(self, request, view) -> bool:
        membership = get_membership(request.user)
        return membership is not None and membership.role == Role.ADMIN


# --- Pagination --------------------------------------------------------------------------


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request) -> int:
        # DRF silently ignores a bad page_size; a client deserves to hear about it.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            message = f"Enter a whole number from 1 to {self.max_page_size}."
            raise exceptions.ValidationError({self.page_size_query_param: message})
        return int(raw)


# --- Fields ------------------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- Not found outside any route ---------------------------------------------------------


def not_found(request, exception: Exception | None = None):
    """404 for unknown URLs: JSON under /api/ (clients parse it), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error."}, status=500)
    return default_server_error(request)
