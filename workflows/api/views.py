"""/api/v1/ endpoints for workflows, actions, execution and runs.

Scoped to the caller's organization like the key endpoints: another organization's
objects are 404. Every member (viewers too) reads and runs; admins and members write.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Prefetch, prefetch_related_objects
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.permissions import SAFE_METHODS, AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from secretsapp.access import as_id
from secretsapp.api.conventions import WRITE_METHODS, IsOrganizationMember, organization_id
from secretsapp.api.throttles import WebhookRateThrottle
from workflows import access, reading, runs, services, webhooks
from workflows.api.serializers import (
    ActionSerializer,
    ExecuteResultSerializer,
    RunRequestSerializer,
    RunSerializer,
    WebhookCreatedSerializer,
    WebhookSerializer,
    WorkflowSerializer,
)
from workflows.models import Action, Run, Webhook, Workflow

logger = logging.getLogger(__name__)

ACTIONS_IN_ORDER = Prefetch("actions", queryset=Action.objects.order_by("position"))

WORKFLOW_FILTER = OpenApiParameter(
    "workflow", OpenApiTypes.INT, description="Only those of this workflow."
)


def _workflow_filter(request) -> int | None:
    raw = request.query_params.get("workflow")
    if raw is None:
        return None
    workflow_id = as_id(raw)
    if workflow_id is None:
        raise exceptions.ValidationError({"workflow": "Enter a workflow id."})
    return workflow_id


class WorkflowViewSet(viewsets.ModelViewSet):
    """Workflows with their actions, in order.

    Changing a workflow (PATCH, DELETE) needs Use on every secret key its actions
    reference: otherwise 403, whose `detail` says whom to ask and names no key."""

    permission_classes = [IsAuthenticated, IsOrganizationMember]
    http_method_names = WRITE_METHODS
    serializer_class = WorkflowSerializer
    queryset = Workflow.objects.none()

    def get_queryset(self):
        return (
            Workflow.objects.filter(organization_id=organization_id(self.request))
            .prefetch_related(ACTIONS_IN_ORDER)
            .order_by("name", "id")
        )

    def get_object(self) -> Workflow:
        need = "view" if self.request.method in SAFE_METHODS else "edit"
        workflow = access.get_workflow_for_user(self.request.user, self.kwargs["pk"], need)
        prefetch_related_objects([workflow], ACTIONS_IN_ORDER)
        return workflow

    def perform_create(self, serializer) -> None:
        prefetch_related_objects([serializer.save()], ACTIONS_IN_ORDER)

    def perform_update(self, serializer) -> None:
        # The service returns the workflow as saved (re-read under a lock), not the one read.
        prefetch_related_objects([serializer.save()], ACTIONS_IN_ORDER)

    def perform_destroy(self, instance: Workflow) -> None:
        services.delete_workflow(self.request.user, instance)

    @extend_schema(
        request=RunRequestSerializer,
        responses={202: RunSerializer, 200: RunSerializer},
        description="Queue a run of every action in order. 202 with the queued run (its URL "
        "in `Location`); with `wait`, 200 with the finished run if it ends within that many "
        "seconds. Poll `GET /api/v1/runs/{id}/` for the rest.",
    )
    @route(detail=True, methods=["post"], url_path="runs")
    def runs(self, request, pk: str | None = None) -> Response:
        workflow = access.get_workflow_for_user(request.user, pk)
        run = _start_run(request, workflow)
        return Response(
            RunSerializer(run).data, status=_run_status(run), headers=_located(request, run)
        )

    @extend_schema(
        methods=["GET"],
        request=None,
        responses={200: WebhookSerializer},
        description="The workflow's webhook, without its token; 404 if it has none.",
    )
    @extend_schema(
        methods=["POST"],
        request=None,
        responses={201: WebhookCreatedSerializer},
        description="Set up the workflow's webhook, or rotate its token (the old one stops "
        "working at once). The answer holds the token: the only time it is shown. Its runs "
        "act with your rights, checked again when each starts. Needs what changing the "
        "workflow needs: 403 otherwise, whose `detail` names no key.",
    )
    @extend_schema(
        methods=["DELETE"],
        request=None,
        responses={204: None},
        description="Remove the workflow's webhook: its token stops working. 404 if it has "
        "none. Needs what changing the workflow needs.",
    )
    @route(detail=True, methods=["get", "post", "delete"])
    def webhook(self, request, pk: str | None = None) -> Response:
        workflow = access.get_workflow_for_user(request.user, pk)
        if request.method == "POST":
            webhook, token = webhooks.create_or_rotate(request.user, workflow)
            created = {
                "url": webhooks.url(request, token),
                "token": token,
                "created_by": webhook.created_by_id,
                "created_at": webhook.created_at,
            }
            return Response(
                WebhookCreatedSerializer(created).data,
                status=status.HTTP_201_CREATED,
                headers={"Cache-Control": "no-store"},
            )
        if request.method == "DELETE":
            if not webhooks.remove(request.user, workflow):
                raise exceptions.NotFound(NO_WEBHOOK)
            return Response(status=status.HTTP_204_NO_CONTENT)
        webhook = webhooks.of_workflow(workflow)
        if webhook is None:
            raise exceptions.NotFound(NO_WEBHOOK)
        return Response(WebhookSerializer(webhook, context={"request": request}).data)


def _start_run(request, workflow: Workflow, action: Action | None = None) -> Run:
    """Queue the run the request asks for, wait as long as it may, and return the run as
    the caller may see it."""
    payload = RunRequestSerializer(data=request.data)
    payload.is_valid(raise_exception=True)
    run = runs.enqueue(request.user, workflow, payload.validated_data["inputs"], action=action)
    run = runs.wait_for(run, payload.validated_data["wait"])
    return _shown(request.user, run)


def _shown(user, run: Run) -> Run:
    """``run`` (as just read) with its steps, as ``user`` may see it."""
    prefetch_related_objects([run], "steps")
    reading.show_runs(user, [run])
    return run


def _run_status(run: Run) -> int:
    return status.HTTP_200_OK if run.is_finished else status.HTTP_202_ACCEPTED


def _located(request, run: Run) -> dict[str, str]:
    return {"Location": request.build_absolute_uri(reverse("api:run-detail", args=[run.pk]))}


@extend_schema_view(list=extend_schema(parameters=[WORKFLOW_FILTER]))
class ActionViewSet(viewsets.ModelViewSet):
    """Actions of the organization's workflows; `?workflow=` filters.

    Adding, changing, moving or deleting an action needs Use on every secret key its
    workflow references, before and after the change: otherwise 403, whose `detail` says
    whom to ask and names no key."""

    permission_classes = [IsAuthenticated, IsOrganizationMember]
    http_method_names = WRITE_METHODS
    serializer_class = ActionSerializer
    queryset = Action.objects.none()

    def get_queryset(self):
        actions = Action.objects.filter(workflow__organization_id=organization_id(self.request))
        workflow_id = _workflow_filter(self.request)
        if workflow_id is not None:
            actions = actions.filter(workflow_id=workflow_id)
        return actions.order_by("workflow_id", "position")

    def get_object(self) -> Action:
        need = "view" if self.request.method in SAFE_METHODS or self.action == "execute" else "edit"
        return access.get_action_for_user(self.request.user, self.kwargs["pk"], need)

    def perform_destroy(self, instance: Action) -> None:
        services.delete_action(self.request.user, instance)

    @extend_schema(
        request=RunRequestSerializer,
        responses={200: ExecuteResultSerializer, 202: RunSerializer},
        description="Queue a run of this one action. 202 with the queued run (its URL in "
        "`Location`); with `wait`, 200 with `{run_id, status, output, error, duration_ms}` "
        "if it ends within that many seconds.",
    )
    @route(detail=True, methods=["post"])
    def execute(self, request, pk: str | None = None) -> Response:
        action = self.get_object()
        run = _start_run(request, action.workflow, action)
        if not run.is_finished:
            return Response(
                RunSerializer(run).data, status=_run_status(run), headers=_located(request, run)
            )
        steps = list(run.steps.all())
        result: dict[str, Any] = {
            "run_id": run.pk,
            "status": run.status,
            "output": steps[0].shown_output if steps else None,
            "error": steps[0].shown_error if steps else ("" if run.outputs_hidden else run.error),
            "duration_ms": run.duration_ms,
        }
        return Response(ExecuteResultSerializer(result).data, headers=_located(request, run))


@extend_schema_view(list=extend_schema(parameters=[WORKFLOW_FILTER]))
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs of the organization, newest first, redacted. Every member sees each run; its
    inputs, outputs and errors only those who may Use every key it used."""

    permission_classes = [IsAuthenticated, IsOrganizationMember]
    serializer_class = RunSerializer
    queryset = Run.objects.none()

    def get_queryset(self):
        found = Run.objects.filter(organization_id=organization_id(self.request))
        workflow_id = _workflow_filter(self.request)
        if workflow_id is not None:
            found = found.filter(workflow_id=workflow_id)
        return found.prefetch_related("steps").order_by("-created_at", "id")

    def get_object(self) -> Run:
        run = runs.reaped_if_stale(access.get_run_for_user(self.request.user, self.kwargs["pk"]))
        reading.show_runs(self.request.user, [run])
        return run

    def paginate_queryset(self, queryset) -> list[Run] | None:
        page = super().paginate_queryset(queryset)
        reading.show_runs(self.request.user, page or [])
        return page

    @extend_schema(
        request=None,
        responses={200: RunSerializer},
        description="Cancel a queued run (it never starts) or a running one (its sandbox is "
        "killed and its HTTP call aborted within seconds). Whoever started the run, and "
        "members and admins, may cancel it; 409 once it has ended.",
    )
    @route(detail=True, methods=["post"])
    def cancel(self, request, pk: str | None = None) -> Response:
        run = access.get_run_for_user(request.user, pk)
        try:
            run = runs.cancel(request.user, run)
        except runs.CannotCancel as refusal:
            raise Conflict(str(refusal)) from None
        return Response(RunSerializer(_shown(request.user, run)).data)


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"


# --- Webhooks ----------------------------------------------------------------------------

NO_WEBHOOK = "This workflow has no webhook."
# The same answer for a token that never existed, was rotated away or removed.
UNKNOWN_HOOK = "No webhook has this URL: it may have been removed or given a new token."


class WebhookTriggerView(APIView):
    """``POST /hooks/<token>/``: the token in the URL is the only credential. No session,
    no CSRF (nothing of a browser's is used), JSON bodies only, throttled per webhook."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [WebhookRateThrottle]
    http_method_names = ["post"]

    webhook: Webhook | None = None

    def initial(self, request, *args: Any, **kwargs: Any) -> None:
        # Found before the throttle runs: it counts the calls of each webhook. (Other
        # methods are 405s, counted against no webhook.)
        if request.method.lower() in self.http_method_names:
            self.webhook = webhooks.find(kwargs["token"])
            if self.webhook is None:
                raise exceptions.NotFound(UNKNOWN_HOOK)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="hooks_trigger",
        auth=[],
        request={"application/json": OpenApiTypes.OBJECT},
        responses={202: RunSerializer},
        description="Start a run of the webhook's workflow: the JSON object's fields are "
        "its inputs. 202 with the queued run (its URL, for signed-in members, in "
        "`Location`). The run acts with the rights of whoever set the webhook up, checked "
        "again when it starts. 404 for an unknown, rotated or removed token; 400 for a body "
        "that is not an object of the workflow's inputs (nothing is queued); 403 if the "
        "person who set it up is no longer a member; 429 past the webhook's rate "
        "(WEBHOOK_RATE).",
    )
    def post(self, request, token: str) -> Response:
        run = webhooks.trigger(self.webhook, request.data)
        return Response(
            RunSerializer(_shown(self.webhook.created_by, run)).data,
            status=status.HTTP_202_ACCEPTED,
            headers=_located(request, run),
        )

    # Django logs every 4xx and 5xx with the request's path, and here the path holds the
    # token: those answers are logged here instead, naming the webhook by id.

    def handle_exception(self, exc: Exception) -> Response:
        try:
            return super().handle_exception(exc)
        except Exception:  # what DRF re-raises for Django to log and answer 500
            logger.exception("A call of webhook %s failed.", self._webhook_id())
            return Response({"detail": "Server error."}, status=500)

    def finalize_response(self, request, response, *args: Any, **kwargs: Any):
        response = super().finalize_response(request, response, *args, **kwargs)
        if response.status_code >= 400:
            response._has_been_logged = True  # django.utils.log.log_response skips it
            if response.status_code < 500:
                logger.warning(
                    "A call of webhook %s was refused: %s.",
                    self._webhook_id(),
                    response.status_code,
                )
        return response

    def _webhook_id(self) -> str:
        return str(self.webhook.pk) if self.webhook is not None else "(unknown token)"
