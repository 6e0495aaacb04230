"""Workflows, their ordered actions, where actions use keys, and runs."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from secretsapp.models import NAME_MAX_LENGTH, Organization


class ActionType(models.TextChoices):
    SEND_API_REQUEST = "send_api_request", "Send API Request"
    RUN_CODE = "run_code", "Run Code"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# A run in one of these states is over: nothing changes it any more.
FINISHED_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class StepStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class RunTrigger(models.TextChoices):
    PERSON = "person", "A person (page or API)"
    WEBHOOK = "webhook", "A webhook"


class Workflow(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="workflows"
    )
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    # Names of the trigger inputs, in order ({{inputs.<name>}} in actions).
    inputs = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["organization", "name"], name="workflow_org_name")]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("workflows:edit", args=[self.pk])


class Action(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="actions")
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    type = models.CharField(max_length=20, choices=ActionType.choices)
    # 1-based order in the workflow; the services keep positions 1..n without gaps.
    position = models.PositiveIntegerField()
    config = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["workflow_id", "position"]
        indexes = [models.Index(fields=["workflow", "position"], name="action_workflow_position")]
        constraints = [
            models.CheckConstraint(condition=Q(position__gte=1), name="action_position_positive"),
            models.CheckConstraint(
                condition=Q(type__in=ActionType.values), name="action_type_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.name}"


class SecretReference(models.Model):
    """Where-used index: one row per (action, key) it references, kept in step with saves.

    Not a foreign key to the key: an action that references a deleted key keeps the row,
    so the usage of a deleted id can still be listed and the run fails clearly.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="secret_references")
    secret_key_id = models.UUIDField()
    # The config fields that hold the reference, e.g. ["config.headers[0].value"].
    fields = models.JSONField(default=list)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["action", "secret_key_id"], name="secretreference_unique_per_action"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "secret_key_id"], name="secretreference_key"),
        ]


class Webhook(models.Model):
    """A URL that starts runs of its workflow: ``POST /hooks/<token>/``.

    Only a hash of the token is kept (the token is shown once). Its runs act with the
    rights of ``created_by``, the person who set it up, checked again when each run starts.
    """

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="webhook")
    # SHA-256 of the token (hex): the token is 256 random bits, so a fast hash is enough,
    # and it is how a request finds its webhook (unique index, no scan).
    token_hash = models.CharField(max_length=64, unique=True)
    # The first characters of the token, to tell tokens apart in lists (not secret).
    token_prefix = models.CharField(max_length=12)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Webhook of {self.workflow}"


class Run(models.Model):
    """One execution of an action or a whole workflow. Everything stored is redacted.

    ``queued`` (created by the web, executed by a Celery worker) → ``running`` (claimed
    by exactly one worker: at most once) → ``succeeded`` | ``failed`` | ``cancelled``.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="runs")
    workflow = models.ForeignKey(
        Workflow, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    # Set when a single action was executed; None for a whole-workflow run.
    action = models.ForeignKey(
        Action, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    # The run is of one action (which may since have been deleted: action is then None).
    single_action = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    # Whose rights the run uses: the person who ran it, or who set up its webhook.
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    trigger = models.CharField(max_length=10, choices=RunTrigger.choices, default=RunTrigger.PERSON)
    webhook = models.ForeignKey(
        Webhook, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    # Redacted with the values the run resolves; empty until the run has started.
    inputs = models.JSONField(default=dict, blank=True)
    # The inputs as given, until a worker redacts them into ``inputs`` as the run starts
    # (a value typed in by someone who knows it is never shown): never shown, then emptied.
    queued_inputs = models.JSONField(default=dict, blank=True)
    # The keys whose values the run resolved (as strings): its inputs, outputs and errors
    # are read only by those who may Use every one of them. Stored texts name a key as
    # ``[redacted:<id>]``; readers see its name only if they may Use it.
    secret_key_ids = models.JSONField(default=list, blank=True)
    # Why the run as a whole failed or was cancelled (a step's failure is on the step).
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When a message for it was last sent to the queue (the sweeper sends again after
    # RUNS_REDISPATCH_SECONDS: a broker restart loses no run).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # The worker running it writes this every RUNS_HEARTBEAT_SECONDS; a running run whose
    # heartbeat is older than RUNS_HEARTBEAT_TIMEOUT was interrupted (its worker died).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="run_org_created"),
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_created"),
            # Claims count an organization's running runs; the sweeper finds queued and
            # running ones. Both read few rows: finished runs are the bulk.
            models.Index(fields=["status", "organization"], name="run_status_org"),
        ]

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class RunStep(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    action = models.ForeignKey(
        Action, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    type = models.CharField(max_length=20, choices=ActionType.choices)
    status = models.CharField(max_length=10, choices=StepStatus.choices)
    # The action's config as it was run: references as written, never their values.
    config = models.JSONField(default=dict)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["run_id", "position"]
