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

        self.stdout.write(self.style.SUCCESS(f"Demo organization “{ORGANIZATION}” is ready."))
        self.stdout.write("Sign in at http://127.0.0.1:8000/ as (same password for all):")
        self.stdout.write(f"  password: {PASSWORD}")
        for username, role in PEOPLE:
            self.stdout.write(f"  {username:<8} {role.label}")
