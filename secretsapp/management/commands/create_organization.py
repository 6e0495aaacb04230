from __future__ import annotations

import getpass
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from secretsapp import services


class Command(BaseCommand):
    help = "Create an organization and its first admin (prompts for the password if omitted)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The organization's name.")
        parser.add_argument("--admin", required=True, help="Username of the first admin.")
        parser.add_argument("--email", required=True, help="Email address of the first admin.")
        parser.add_argument(
            "--password",
            help="Password of the first admin. Omit it to be prompted (keeps it out of "
            "the shell history).",
        )

    def handle(self, *args, name: str, admin: str, email: str, password: str | None, **options):
        if password is None:
            password = self._prompt_password()
        try:
            organization = services.create_organization(
                name, admin_username=admin, admin_email=email, admin_password=password
            )
        except ValidationError as error:
            raise CommandError(_describe(error)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Created organization “{organization.name}” with admin “{admin}”. "
                "Sign in at /admin/."
            )
        )

    def _prompt_password(self) -> str:
        if not sys.stdin.isatty():
            raise CommandError("No terminal to prompt on: pass --password.")
        password = getpass.getpass("Password for the admin: ")
        if password != getpass.getpass("Password (again): "):
            raise CommandError("The passwords do not match.")
        return password


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()
    )
