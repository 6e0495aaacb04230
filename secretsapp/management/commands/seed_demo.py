"""A demo organization for `make run`: safe to run again, it only adds what is missing."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from secretsapp import services
from secretsapp.models import Access, Organization, OrganizationGroup, Role, SecretKey

ORGANIZATION = "Demo Co"
# Demo logins only: printed on purpose so a new user can sign in straight away.
PASSWORD = "demo-Password-2026"
PEOPLE = [
    ("admin", Role.ADMIN),
    ("maria", Role.MEMBER),
    ("sam", Role.MEMBER),
    ("victor", Role.VIEWER),
]
GROUP = "Engineering"
WORKFLOW = "Demo: check a customer"


class Command(BaseCommand):
    help = "Create the demo organization with an admin, two members, a viewer, a group and keys."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        User = get_user_model()
        organization = Organization.objects.filter(name=ORGANIZATION).first()
        if organization is None:
            organization = services.create_organization(
                ORGANIZATION,
                admin_username="admin",
                admin_email="admin@demo.example",
                admin_password=PASSWORD,
            )
        admin = User.objects.get(username="admin")
        for username, role in PEOPLE[1:]:
            if not User.objects.filter(username=username).exists():
                services.add_member(
                    admin,
                    organization,
                    username=username,
                    email=f"{username}@demo.example",
                    password=PASSWORD,
                    role=role,
                )
        maria = User.objects.get(username="maria")
        sam = User.objects.get(username="sam")
        group = OrganizationGroup.objects.filter(organization=organization, name=GROUP).first()
        if group is None:
            group = services.create_group(admin, organization, name=GROUP, members=[maria])

        keys = [
            ("Slack webhook URL", "https://hooks.slack.example/T000/B000/demo", Access.TEAM, []),
            (
                "Stripe API key",
                "sk_test_demo_4eC39HqLyjWDarjtT1zdp7dc",
                Access.RESTRICTED,
                [{"principal_type": "group", "principal_id": group.pk, "level": "use"}],
            ),
            (
                "GitHub token",
                "ghp_demoDemoDemoDemoDemoDemoDemoDemo0000",
                Access.RESTRICTED,
                [{"principal_type": "user", "principal_id": sam.pk, "level": "manage"}],
            ),
        ]
        for name, value, access, grants in keys:
            if not SecretKey.objects.filter(organization=organization, name=name).exists():
                services.create_secret_key(
                    admin, name=name, value=value, access_level=access, grants=grants
                )
        _seed_workflow(admin, organization)

        self.stdout.write(self.style.SUCCESS(f"Demo organization “{ORGANIZATION}” is ready."))
        self.stdout.write("Sign in at http://127.0.0.1:8000/ as (same password for all):")
        self.stdout.write(f"  password: {PASSWORD}")
        for username, role in PEOPLE:
            self.stdout.write(f"  {username:<8} {role.label}")


def _seed_workflow(admin, organization: Organization) -> None:
    """A workflow that uses the demo keys in both kinds of step, so that a newcomer meets
    the + menu and key references before building anything. Its request goes to this
    server itself (http://127.0.0.1:8000, allowed by `make run`'s EGRESS_ALLOWED_HOSTS):
    the demo sends nothing off the machine."""
    from workflows import services as workflow_services
    from workflows.models import Workflow

    if Workflow.objects.filter(organization=organization, name=WORKFLOW).exists():
        return
    stripe = SecretKey.objects.get(organization=organization, name="Stripe API key")
    slack = SecretKey.objects.get(organization=organization, name="Slack webhook URL")
    workflow = workflow_services.create_workflow(admin, name=WORKFLOW, inputs=["customer"])
    workflow_services.create_action(
        admin,
        workflow,
        name="Check the key",
        action_type="run_code",
        config={
            "language": "python",
            "code": (
                "# The key's value is in variables; what the code returns is redacted.\n"
                'return {"customer": variables["customer"], '
                '"key_length": len(variables["stripe_key"])}'
            ),
            "variables": [
                {"name": "customer", "value": "{{inputs.customer}}"},
                {"name": "stripe_key", "value": stripe.reference},
            ],
        },
    )
    workflow_services.create_action(
        admin,
        workflow,
        name="Ask this server who we are",
        action_type="send_api_request",
        config={
            "method": "GET",
            "url": "http://127.0.0.1:8000/api/v1/auth/whoami/",
            "query": [{"name": "customer", "value": "{{steps.1.result.customer}}"}],
            "headers": [
                {"name": "Authorization", "value": f"Bearer {stripe.reference}"},
                {"name": "X-Notify", "value": slack.reference},
            ],
            "body": {"type": "none", "fields": [], "raw": ""},
        },
    )
