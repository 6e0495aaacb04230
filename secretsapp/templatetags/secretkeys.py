"""Template filters for key pages: readable audit details and relative times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

from secretsapp.models import AuditAction, AuditEvent

register = template.Library()


@register.filter
def ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"


def _grants(grants: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{grant['principal_name']} ({str(grant['level']).title()})" for grant in grants
    )


@register.filter
def describe_changes(event: AuditEvent) -> str:
    """What changed, in words (never a value: events hold none)."""
    changes = event.changes or {}
    if event.action == AuditAction.CREATED:
        text = str(changes.get("access", "")).title()
        if changes.get("grants"):
            return f"{text}, shared with {_grants(changes['grants'])}"
        return text
    if event.action == AuditAction.RENAMED:
        return f"“{changes['name']['from']}” → “{changes['name']['to']}”"
    if event.action == AuditAction.VALUE_UPDATED:
        return f"version {changes['version']['from']} → {changes['version']['to']}"
    if event.action == AuditAction.ACCESS_CHANGED:
        return f"{changes['access']['from']} → {changes['access']['to']}"
    if event.action == AuditAction.GRANTS_CHANGED:
        parts = []
        if changes.get("added"):
            parts.append(f"added {_grants(changes['added'])}")
        if changes.get("removed"):
            parts.append(f"removed {_grants(changes['removed'])}")
        return "; ".join(parts)
    if event.action == AuditAction.USED:
        return f"run {str(changes.get('run_id', ''))[:8]}"
    if event.action == AuditAction.DENIED:
        return f"needed {str(changes.get('needed', '')).title()}"
    if event.action == AuditAction.DELETED:
        return f"at version {changes.get('version', '?')}"
    if "workflow_name" in changes:  # a workflow's webhook: set up, rotated or removed
        return f"workflow “{changes['workflow_name']}”"
    return ""
