"""Seeds the gunicorn benchmark's PostgreSQL database and counts the queries of an execute
there (figure 1 on PostgreSQL); prints one JSON object for bench/run.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

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
            admin, name=f"Key {index}", value=f"throughput-value-{index:04d}-abcdefgh"
        )
        for index in range(50)
    ]
    workflow = services.create_workflow(admin, name="Throughput")

    def action(count: int) -> int:
        headers = [
            {"name": f"X-Key-{index}", "value": f"{{{{secret:{keys[index].pk}}}}}"}
            for index in range(count)
        ]
        return services.create_action(
            admin,
            workflow,
            name=f"{count} keys",
            action_type="send_api_request",
            config={"method": "POST", "url": f"{target}/hook", "headers": headers},
        ).pk

    actions = {count: action(count) for count in (0, 1, 5, 50)}
    token = Token.objects.create(user=admin).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    queries = {}
    for count in (1, 50):
        path = f"/api/v1/actions/{actions[count]}/execute/"
        client.post(path, {}, format="json")  # warm up
        with CaptureQueriesContext(connection) as captured:
            response = client.post(path, {}, format="json")
        assert response.status_code == 200, response.content
        queries[count] = [query["sql"][:120] for query in captured.captured_queries]
    print(json.dumps({"token": token, "actions": actions, "queries": queries}))


if __name__ == "__main__":
    main(sys.argv[1])
