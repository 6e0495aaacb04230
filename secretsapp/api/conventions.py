"""What every endpoint of /api/v1/ shares: errors, permissions, pagination (throttles
are in ``secretsapp.api.throttles``, the JSON parser in ``secretsapp.api.parsers``).

Workflows' endpoints use the same classes, so a client meets one set of conventions.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from secretsapp import access
from secretsapp.models import get_membership
from secretsapp.services import StaleWrite


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The object changed since you read it; read it again and retry."
    default_code = "precondition_failed"


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self) -> None:
        super().__init__(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes."
        )


def exception_handler(error: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: service validation errors are 400s with field errors, stale
    writes are 412s, bodies over DATA_UPLOAD_MAX_MEMORY_SIZE are 413s (Django refuses
    them from their Content-Length, before reading), and every error body has a
    ``detail`` field."""
    if isinstance(error, RequestDataTooBig):
        error = RequestTooLarge()
    elif isinstance(error, DjangoValidationError):
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


# PUT is not offered: PATCH takes any subset of the fields.
WRITE_METHODS = ["get", "post", "patch", "delete", "head", "options"]


def organization_id(request) -> int:
    """The caller's organization (the permission classes ensured a membership)."""
    return get_membership(request.user).organization_id


# --- Permissions: one class per concern --------------------------------------------------


class IsOrganizationMember(BasePermission):
    """Signed in and a member of an organization (any role)."""

    message = "You are not a member of an organization."

    def has_permission(self, request, view) -> bool:
        return access.is_member(request.user)


class IsOrganizationAdminOrReadOnly(BasePermission):
    """Every member reads; only the organization's admins write.

    On a detail route the write is refused per object (the view's ``get_object`` calls
    ``check_object_permissions`` after its organization-scoped lookup), so another
    organization's or an unknown id is a 404 for everyone, never a 403 (DESIGN.md)."""

    message = "Only organization admins can do this."

    def has_permission(self, request, view) -> bool:
        read_or_per_object = request.method in SAFE_METHODS or getattr(view, "detail", False)
        return access.is_member(request.user) and (
            read_or_per_object or access.is_admin(request.user)
        )

    def has_object_permission(self, request, view, obj) -> bool:
        return request.method in SAFE_METHODS or access.is_admin(request.user, obj.organization_id)


class IsOrganizationAdmin(BasePermission):
    message = "Only organization admins can do this."

    def has_permission(self, request, view) -> bool:
        return access.is_admin(request.user)


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
        # ASCII digits only: "²".isdigit() is true but int("²") raises (a 500).
        if not _is_whole_number(raw) or not 1 <= int(raw) <= self.max_page_size:
            message = f"Enter a whole number from 1 to {self.max_page_size}."
            raise exceptions.ValidationError({self.page_size_query_param: message})
        return int(raw)

    def get_page_number(self, request, paginator) -> int:
        # DRF reads an empty ?page= as page 1 and other text as an unknown page (404): a
        # page that is not a whole number is a client's mistake, a 400 as for page_size.
        # A page past the last one stays a 404.
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if not _is_whole_number(raw) or int(raw) < 1:
            raise exceptions.ValidationError({self.page_query_param: "Enter a page number from 1."})
        return int(raw)


def _is_whole_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


# --- Fields ------------------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- Not found outside any route ---------------------------------------------------------


# Paths that machines call: their errors are JSON, also where no route matched (a webhook
# token with a character no route takes).
JSON_PATHS = ("/api/", "/hooks/")


def not_found(request, exception: Exception | None = None):
    """404 for unknown URLs: JSON under JSON_PATHS (clients parse it), Django's page
    elsewhere."""
    if request.path.startswith(JSON_PATHS):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def server_error(request):
    if request.path.startswith(JSON_PATHS):
        return JsonResponse({"detail": "Server error."}, status=500)
    return default_server_error(request)
