from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from secretsapp.models import (
    AuditEvent,
    Membership,
    Organization,
    OrganizationGroup,
    Role,
    SecretKey,
)
from tests.factories import PASSWORD
from workflows import runs
from workflows.models import Workflow


def test_create_organization_command(db):
    output = io.StringIO()
    call_command(
        "create_organization",
        "Initech",
        "--admin",
        "peter",
        "--email",
        "peter@initech.example",
        "--password",
        PASSWORD,
        stdout=output,
    )
    assert "Created organization “Initech”" in output.getvalue()
    membership = Membership.objects.get(user__username="peter")
    assert membership.organization.name == "Initech"
    assert membership.role == Role.ADMIN
    assert membership.user.is_staff
    assert membership.user.check_password(PASSWORD)


def test_create_organization_command_reports_bad_input(db):
    with pytest.raises(CommandError, match="email"):
        call_command(
            "create_organization",
            "Initech",
            "--admin",
            "peter",
            "--email",
            "nope",
            "--password",
            PASSWORD,
        )
    assert not Organization.objects.exists()


def test_create_organization_without_password_and_terminal_fails_clearly(db, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO())
    with pytest.raises(CommandError, match="pass --password"):
        call_command("create_organization", "Initech", "--admin", "peter", "--email", "p@i.example")


def test_create_organization_prompts_for_password(db, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("getpass.getpass", lambda prompt: PASSWORD)
    call_command("create_organization", "Initech", "--admin", "peter", "--email", "p@i.example")
    assert get_user_model().objects.get(username="peter").check_password(PASSWORD)


def test_seed_demo_is_idempotent(db):
    output = io.StringIO()
    call_command("seed_demo", stdout=output)
    counts = (
        Organization.objects.count(),
        Membership.objects.count(),
        OrganizationGroup.objects.count(),
        SecretKey.objects.count(),
        AuditEvent.objects.count(),
    )
    call_command("seed_demo", stdout=io.StringIO())
    assert counts == (1, 4, 1, 3, 3)
    assert (
        Organization.objects.count(),
        Membership.objects.count(),
        OrganizationGroup.objects.count(),
        SecretKey.objects.count(),
        AuditEvent.objects.count(),
    ) == counts
    roles = dict(Membership.objects.values_list("user__username", "role"))
    assert roles == {"admin": "admin", "maria": "member", "sam": "member", "victor": "viewer"}
    assert "demo-Password-2026" in output.getvalue()
    assert SecretKey.objects.get(name="Stripe API key").access == "restricted"


def test_seed_demo_has_a_workflow_that_uses_the_demo_keys_once(db):
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())

    workflow = Workflow.objects.get()
    steps = list(workflow.actions.order_by("position"))
    assert [step.type for step in steps] == ["run_code", "send_api_request"]
    used = {
        name
        for step in steps
        for name in step.secret_references.values_list("secret_key_id", flat=True)
    }
    assert used == set(
        SecretKey.objects.filter(name__in=["Stripe API key", "Slack webhook URL"]).values_list(
            "pk", flat=True
        )
    )
    # It runs: the code step uses the key without showing it.
    run = runs.enqueue(workflow.created_by, workflow, {"customer": "cus_demo"}, action=steps[0])
    step = run.steps.get()
    assert step.output["result"] == {"customer": "cus_demo", "key_length": 37}
