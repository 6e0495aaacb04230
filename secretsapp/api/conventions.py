"""What every endpoint of /api/v1/ shares: errors, permissions, pagination (throttles
are in ``secretsapp.api.throttles``).

Workflows' endpoints use the same classes, so a client meets one set of conventions.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
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
