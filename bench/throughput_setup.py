"""Seeds the gunicorn benchmark's PostgreSQL database; prints "<token> <action id>"."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402

django.setup()

from rest_framework.authtoken.models import Token  # noqa: E402

from secretsapp import services as secret_services  # noqa: E402
from workflows import services  # noqa: E402


def main(target: str) -> None:
    organization = secret_services.create_organization(
        "Throughput",
        admin_username="throughput-admin",
        admin_email="admin@throughput.test",
        admin_password="Bench-password-2026",
    )
    admin = organization.memberships.get().user
    keys = [
        secret_services.create_secret_key(
            admin, name=f"Key {index}", value=f"throughput-value-{index:04d}"
        )
        for index in range(5)
    ]
    workflow = services.create_workflow(admin, name="Throughput")
    headers = [
        {"name": f"X-Key-{index}", "value": f"{{{{secret:{key.pk}}}}}"}
        for index, key in enumerate(keys)
    ]
    action = services.create_action(
        admin,
        workflow,
        name="Call",
        action_type="send_api_request",
        config={"method": "POST", "url": f"{target}/hook", "headers": headers},
    )
    print(Token.objects.create(user=admin).key, action.pk)


if __name__ == "__main__":
    main(sys.argv[1])
