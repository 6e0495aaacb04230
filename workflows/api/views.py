"""/api/v1/ endpoints for workflows, actions, execution and runs.

Scoped to the caller's organization like the key endpoints: another organization's
objects are 404. Every member (viewers too) reads and runs; admins and members write.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, prefetch_related_objects
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.permissions import SAFE_METHODS, IsAuthenticated
from rest_framework.response import Response

from secretsapp.access import as_id
from secretsapp.api.conventions import WRITE_METHODS, IsOrganizationMember, organization_id
from workflows import access, execution, reading, services
from workflows.api.serializers import (
    ActionSerializer,
    ExecuteResultSerializer,
    RunRequestSerializer,
    RunSerializer,
    WorkflowSerializer,
)
from workflows.models import Action, Run, RunStep, Workflow

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

    @extend_schema(request=RunRequestSerializer, responses={201: RunSerializer})
    @route(detail=True, methods=["post"], url_path="runs")
    def runs(self, request, pk: str | None = None) -> Response:
        """Run every action of the workflow in order; the run comes back redacted."""
        workflow = access.get_workflow_for_user(request.user, pk)
        payload = RunRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        run = execution.run_workflow(request.user, workflow, payload.validated_data["inputs"])
        return Response(RunSerializer(_as_run_by(run)).data, status=status.HTTP_201_CREATED)


def _as_run_by(run: Run) -> Run:
    """A run just made, as the caller who made it may see it: the steps just recorded,
    without reading them back, and the names of the keys they could Use for it."""
    run._prefetched_objects_cache = {"steps": run.recorded_steps}
    reading.show_runs(run.triggered_by, [run], key_names=run.key_names)
    return run


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

    @extend_schema(request=RunRequestSerializer, responses={200: ExecuteResultSerializer})
    @route(detail=True, methods=["post"])
    def execute(self, request, pk: str | None = None) -> Response:
        """Execute this one action; its output comes back redacted."""
        action = self.get_object()
        payload = RunRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        run = execution.execute_action(request.user, action, payload.validated_data["inputs"])
        step: RunStep = _as_run_by(run).recorded_steps[0]
        result: dict[str, Any] = {
            "run_id": run.pk,
            "status": run.status,
            "output": step.shown_output,
            "error": step.shown_error,
            "duration_ms": run.duration_ms,
        }
        return Response(ExecuteResultSerializer(result).data)


@extend_schema_view(list=extend_schema(parameters=[WORKFLOW_FILTER]))
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs of the organization, newest first, redacted. Every member sees each run; its
    inputs, outputs and errors only those who may Use every key it used."""

    permission_classes = [IsAuthenticated, IsOrganizationMember]
    serializer_class = RunSerializer
    queryset = Run.objects.none()

    def get_queryset(self):
        runs = Run.objects.filter(organization_id=organization_id(self.request))
        workflow_id = _workflow_filter(self.request)
        if workflow_id is not None:
            runs = runs.filter(workflow_id=workflow_id)
        return runs.prefetch_related("steps").order_by("-started_at", "id")

    def get_object(self) -> Run:
        run = access.get_run_for_user(self.request.user, self.kwargs["pk"])
        reading.show_runs(self.request.user, [run])
        return run

    def paginate_queryset(self, queryset) -> list[Run] | None:
        page = super().paginate_queryset(queryset)
        reading.show_runs(self.request.user, page or [])
        return page
