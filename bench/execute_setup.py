"""The execute figures' data (1, 2 and 5): an organization with 50 keys, actions that
reference 0, 1, 5 and 50 of them, a token, and the SQL each execute runs.

bench/run.py imports it for the in-process figures (SQLite) and runs it as a script for
the PostgreSQL ones, which then prints {"token", "actions", "queries"} as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PASSWORD = "Bench-password-2026"


def seed(target: str) -> tuple[str, dict[int, int]]:
    """(API token, action id by number of referenced keys), in the configured database."""
    from rest_framework.authtoken.models import Token

    from secretsapp import services as secret_services
    from workflows import services

    organization = secret_services.create_organization(
        "Execute",
        admin_username="execute-admin",
        admin_email="admin@execute.test",
        admin_password=PASSWORD,
    )
    admin = organization.memberships.get().user
    keys = [
        secret_services.create_secret_key(
            admin, name=f"Key {index}", value=f"execute-value-{index:04d}-abcdefgh"
        )
        for index in range(50)
    ]
    workflow = services.create_workflow(admin, name="Execute")

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
    return Token.objects.create(user=admin).key, actions


def executor(token: str, actions: dict[int, int]):
    """execute(count): one API call to execute the action with ``count`` keys, checked."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    def execute(count: int) -> None:
        response = client.post(f"/api/v1/actions/{actions[count]}/execute/", {}, format="json")
        assert response.status_code == 200 and response.json()["status"] == "succeeded", (
            response.content
        )

    return execute


def statements(execute) -> dict[int, list[str]]:
    """The SQL of an execute with 1 and with 50 keys (after a warm-up call each)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    queries = {}
    for count in (1, 50):
        execute(count)
        with CaptureQueriesContext(connection) as captured:
            execute(count)
        queries[count] = [query["sql"][:120] for query in captured.captured_queries]
    return queries


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    token, actions = seed(sys.argv[1])
    queries = statements(executor(token, actions))
    print(json.dumps({"token": token, "actions": actions, "queries": queries}))
