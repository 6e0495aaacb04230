"""Serializers of /api/v1/ for workflows, actions and runs. Writes go to the services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from secretsapp.api.conventions import StrictCharField
from secretsapp.models import NAME_MAX_LENGTH, get_membership
from workflows import services, webhooks
from workflows.models import (
    Action,
    ActionType,
    Run,
    RunStatus,
    RunStep,
    RunTrigger,
    StepStatus,
    Webhook,
    Workflow,
)


class ActionSerializer(serializers.ModelSerializer):
    workflow = serializers.PrimaryKeyRelatedField(queryset=Workflow.objects.none())
    name = StrictCharField(max_length=NAME_MAX_LENGTH)
    type = serializers.ChoiceField(choices=ActionType.choices)
    position = serializers.IntegerField(
        min_value=1,
        max_value=services.MAX_ACTIONS,
        required=False,
        help_text="1-based place in the workflow; default: last.",
    )
    config = serializers.JSONField(
        help_text="See “Action config”: send_api_request {method, url, query, headers, body}; "
        "run_code {language, code, variables}. Strings may hold {{secret:<id>}}, "
        "{{inputs.<name>}} and {{steps.<n>.<path>}}."
    )

    class Meta:
        model = Action
        fields = ["id", "workflow", "name", "type", "position", "config"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        membership = get_membership(request.user) if request else None
        if membership is not None:
            self.fields["workflow"].queryset = Workflow.objects.filter(
                organization_id=membership.organization_id
            )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None:
            for field in ("workflow", "type"):
                if field in data and data[field] != getattr(self.instance, field):
                    raise serializers.ValidationError(
                        {field: "cannot be changed; create a new action instead."}
                    )
        return data

    def create(self, validated_data: dict[str, Any]) -> Action:
        return services.create_action(
            self.context["request"].user,
            validated_data["workflow"],
            name=validated_data["name"],
            action_type=validated_data["type"],
            config=validated_data["config"],
            position=validated_data.get("position"),
        )

    def update(self, instance: Action, validated_data: dict[str, Any]) -> Action:
        return services.update_action(
            self.context["request"].user,
            instance,
            name=validated_data.get("name", services.UNSET),
            config=validated_data.get("config", services.UNSET),
            position=validated_data.get("position", services.UNSET),
        )


class WorkflowSerializer(serializers.ModelSerializer):
    name = StrictCharField(max_length=NAME_MAX_LENGTH)
    inputs = serializers.ListField(
        child=StrictCharField(max_length=100),
        max_length=services.MAX_INPUTS,
        required=False,
        help_text="Names of the trigger inputs ({{inputs.<name>}}).",
    )
    actions = ActionSerializer(many=True, read_only=True)

    class Meta:
        model = Workflow
        fields = ["id", "name", "inputs", "actions"]

    def create(self, validated_data: dict[str, Any]) -> Workflow:
        return services.create_workflow(
            self.context["request"].user,
            name=validated_data["name"],
            inputs=validated_data.get("inputs", []),
        )

    def update(self, instance: Workflow, validated_data: dict[str, Any]) -> Workflow:
        return services.update_workflow(
            self.context["request"].user,
            instance,
            name=validated_data.get("name", services.UNSET),
            inputs=validated_data.get("inputs", services.UNSET),
        )


class RunRequestSerializer(serializers.Serializer):
    inputs = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        default=dict,
        help_text="Values of the workflow's trigger inputs, by name.",
    )
    wait = serializers.IntegerField(
        min_value=0,
        max_value=60,
        required=False,
        default=0,
        help_text="Seconds to wait for the run to end: 200 with the finished run if it does, "
        "else 202 with the run as it is. Each web process lets only a few requests wait at "
        "once; the others get their 202 at once (poll GET /api/v1/runs/{id}/).",
    )


class RunStepSerializer(serializers.ModelSerializer):
    """A step as its reader may see it (``workflows.reading.show_runs`` ran first)."""

    action = serializers.IntegerField(source="action_id", read_only=True, allow_null=True)
    status = serializers.ChoiceField(choices=StepStatus.choices, read_only=True)
    type = serializers.ChoiceField(choices=ActionType.choices, read_only=True)
    output = serializers.JSONField(
        source="shown_output",
        read_only=True,
        allow_null=True,
        help_text="Redacted: each secret value is [redacted:<key name>], or [redacted] for a "
        "key you may not use. Null when the run's outputs are hidden from you.",
    )
    error = serializers.CharField(source="shown_error", read_only=True)

    class Meta:
        model = RunStep
        fields = ["position", "action", "name", "type", "status", "output", "error"]


class RunSerializer(serializers.ModelSerializer):
    workflow = serializers.IntegerField(source="workflow_id", read_only=True, allow_null=True)
    action = serializers.IntegerField(source="action_id", read_only=True, allow_null=True)
    triggered_by = serializers.IntegerField(
        source="triggered_by_id",
        read_only=True,
        allow_null=True,
        help_text="Whose rights the run uses: who ran it, or who set up its webhook.",
    )
    trigger = serializers.ChoiceField(choices=RunTrigger.choices, read_only=True)
    status = serializers.ChoiceField(
        choices=RunStatus.choices,
        read_only=True,
        help_text="queued → running → succeeded | failed | cancelled.",
    )
    error = serializers.CharField(
        read_only=True,
        help_text="Why the run as a whole failed or was cancelled (interrupted, cancelled by "
        "someone, its runner removed); a step's failure is on the step. Names no key.",
    )
    cancelled_by = serializers.IntegerField(
        source="cancelled_by_id", read_only=True, allow_null=True
    )
    inputs = serializers.JSONField(source="shown_inputs", read_only=True)
    outputs_hidden = serializers.BooleanField(
        read_only=True,
        help_text="True when the run used secret keys you may not use: its inputs, outputs "
        "and errors are then not shown to you (empty).",
    )
    steps = RunStepSerializer(many=True, read_only=True)

    class Meta:
        model = Run
        fields = [
            "id",
            "workflow",
            "action",
            "status",
            "triggered_by",
            "trigger",
            "inputs",
            "outputs_hidden",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
            "cancelled_by",
            "steps",
        ]


class ExecuteResultSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    output = serializers.JSONField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    duration_ms = serializers.IntegerField(allow_null=True)


# --- Webhooks ----------------------------------------------------------------------------


class WebhookSerializer(serializers.ModelSerializer):
    """A workflow's webhook as it may be shown again: without its token."""

    url_prefix = serializers.SerializerMethodField(
        help_text="The webhook's URL up to the first characters of its token, to tell tokens "
        "apart. The full URL was shown once, when the token was made."
    )
    created_by = serializers.IntegerField(
        source="created_by_id",
        read_only=True,
        help_text="Whose rights its runs use: who set it up or last rotated its token.",
    )

    class Meta:
        model = Webhook
        fields = ["url_prefix", "created_by", "created_at", "last_used_at"]
        read_only_fields = fields

    def get_url_prefix(self, webhook: Webhook) -> str:
        return webhooks.url_prefix(self.context["request"], webhook)


class WebhookCreatedSerializer(serializers.Serializer):
    """A new webhook token, shown this once: only its hash is kept."""

    url = serializers.URLField(help_text="POST a JSON object of inputs here to start a run.")
    token = serializers.CharField(help_text="Shown this once. Rotate to get a new one.")
    created_by = serializers.IntegerField(help_text="Whose rights its runs use: yours.")
    created_at = serializers.DateTimeField()
