"""Webhooks: ``POST /hooks/<token>/`` starts a run of its workflow (issue 12).

- **The token is the credential.** 256 random bits, shown once, kept only as its SHA-256
  (``Webhook.token_hash``, a unique index: a request finds its webhook by one lookup, and
  a fast hash is enough for a random token). No log, audit event or page after the first
  holds it.
- **Whose rights.** A webhook's runs act with the rights of the person who set it up
  (``Webhook.created_by``), checked again when each run starts (``workflows.execution``):
  a key they may no longer Use fails its step. Someone who is no longer an active member
  of the organization cannot lend their rights at all: the endpoint refuses with a 403.
- **Who sets it up.** Whoever may change the workflow (Use on every key it references,
  asked under the workflow's row lock like every change in ``workflows.services``): a
  webhook is a door to running with the creator's rights, so only someone trusted with
  every key the steps hold may open it, or take it over by rotating the token.
- **Audit.** Created, rotated and removed are audit events naming the workflow. A call is
  not: the run it starts is its record (trigger, whose rights, when), and every key it
  uses gets its own ``used`` event naming the run.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from secretsapp import access as secret_access
from secretsapp import audit
from secretsapp.models import AuditAction
from workflows import access, runs
from workflows.models import Run, Webhook, Workflow
from workflows.services import audits_refusals

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

# What secrets.token_urlsafe(32) gives: 43 characters of the URL-safe base64 alphabet.
# Anything else is not a token of ours, and is answered without a query.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
PREFIX_LENGTH = 8

CREATOR_GONE = (
    "This webhook was set up by someone who is no longer a member of the organization, "
    "and its runs would act with their rights. Ask someone who may edit the workflow to "
    "set the webhook up again."
)
NOT_AN_OBJECT = "Send a JSON object: its fields are the workflow's inputs."


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@audits_refusals
def create_or_rotate(actor: AbstractBaseUser, workflow: Workflow) -> tuple[Webhook, str]:
    """Set up the workflow's webhook, or give it a new token (the old one stops working
    at once). Either way its runs then act with ``actor``'s rights. Returns the webhook
    and its token: the only time the token is at hand."""
    access.require_edit(actor, workflow.organization_id)
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        access.require_change(actor, workflow)
        webhook = Webhook.objects.filter(workflow=workflow).first()
        action = AuditAction.WEBHOOK_ROTATED if webhook else AuditAction.WEBHOOK_CREATED
        if webhook is None:
            webhook = Webhook(workflow=workflow)
        webhook.token_hash = hash_token(token)
        webhook.token_prefix = token[:PREFIX_LENGTH]
        webhook.created_by = actor
        webhook.created_at = timezone.now()
        webhook.last_used_at = None  # the new token has not been used
        webhook.save()
        _record(actor, action, workflow)
    return webhook, token


@audits_refusals
def remove(actor: AbstractBaseUser, workflow: Workflow) -> bool:
    """Remove the workflow's webhook: its token stops working. False if it had none.
    Runs it started stay (their webhook becomes empty; their trigger says "webhook")."""
    access.require_edit(actor, workflow.organization_id)
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        access.require_change(actor, workflow)
        deleted, _ = Webhook.objects.filter(workflow=workflow).delete()
        if deleted:
            _record(actor, AuditAction.WEBHOOK_REMOVED, workflow)
    return bool(deleted)


def _record(actor: AbstractBaseUser, action: AuditAction, workflow: Workflow) -> None:
    audit.record_webhook_event(actor, action, workflow.organization_id, workflow.pk, workflow.name)


def url(request: HttpRequest, token: str) -> str:
    """The URL that starts runs, token included: shown once, when the token is made."""
    return request.build_absolute_uri(reverse("webhook-trigger", args=[token]))


def url_prefix(request: HttpRequest, webhook: Webhook) -> str:
    """The URL up to the token's first characters, to tell tokens apart (not secret)."""
    return url(request, webhook.token_prefix).removesuffix("/") + "…"


def find(token: str) -> Webhook | None:
    """The webhook of ``token``, or None (unknown, removed, rotated away): one indexed
    lookup of its hash. The token itself is never logged."""
    if not TOKEN_SHAPE.fullmatch(token):
        return None
    return (
        Webhook.objects.select_related("workflow", "created_by")
        .filter(token_hash=hash_token(token))
        .first()
    )


def of_workflow(workflow: Workflow) -> Webhook | None:
    return Webhook.objects.select_related("created_by").filter(workflow=workflow).first()


def may_lend_rights(webhook: Webhook) -> bool:
    """Whether the person who set the webhook up is still an active member of its
    workflow's organization (their rights on keys are checked when the run starts)."""
    return secret_access.is_member(webhook.created_by, webhook.workflow.organization_id)


def trigger(webhook: Webhook, body: Any) -> Run:
    """Queue a run of the webhook's workflow with ``body`` (a JSON object) as its inputs,
    acting with the rights of whoever set the webhook up.

    403 (``PermissionDenied``) if that person is no longer an active member; 400
    (``ValidationError``) if the body is not an object of the workflow's inputs. Nothing
    is queued then."""
    if not may_lend_rights(webhook):
        raise PermissionDenied(CREATOR_GONE)
    if not isinstance(body, dict):
        raise ValidationError({"inputs": [NOT_AN_OBJECT]})
    run = runs.enqueue(webhook.created_by, webhook.workflow, body, webhook=webhook)
    Webhook.objects.filter(pk=webhook.pk).update(last_used_at=run.created_at)
    return run
