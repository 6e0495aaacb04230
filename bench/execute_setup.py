"""The execute figures' data (1, 2, 5 and the queue's 7–9): an organization with 50 keys,
actions that reference 0, 1, 5 and 50 of them, actions of their own workflows for the
queue's figures (a no-op one and one whose target sleeps 5 s), a token, and the SQL each
execute runs.

bench/run.py imports it for the in-process figures (SQLite) and runs it as a script for
the PostgreSQL ones, which then prints {"token", "actions", "queue", "queries"} as JSON.

The SQL is counted in Celery's eager mode: the worker's part of the run executes inside
the API request, so one capture holds the web's queries and the worker's, told apart by
the task's start and end signals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PASSWORD = "Bench-password-2026"
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT")
# The queue's figures: workflow name → the path of the target its one action calls.
QUEUE_WORKFLOWS = {"noop": "/hook", "spaced": "/hook", "slow": "/sleep/5"}


def seed(target: str) -> tuple[str, dict[int, int], dict[str, dict[str, int]]]:
    """(API token, action id by number of referenced keys, {"workflow", "action"} by
    queue figure), in the configured database."""
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

    def action(workflow, name: str, path: str, count: int = 0) -> int:
        headers = [
            {"name": f"X-Key-{index}", "value": f"{{{{secret:{keys[index].pk}}}}}"}
            for index in range(count)
        ]
        return services.create_action(
            admin,
            workflow,
            name=name,
            action_type="send_api_request",
            config={"method": "POST", "url": f"{target}{path}", "headers": headers},
        ).pk

    actions = {count: action(workflow, f"{count} keys", "/hook", count) for count in (0, 1, 5, 50)}
    queue = {}
    for name, path in QUEUE_WORKFLOWS.items():
        # One workflow each, so that `GET /runs/?workflow=` lists one figure's runs.
        own = services.create_workflow(admin, name=f"Queue {name}")
        queue[name] = {"workflow": own.pk, "action": action(own, name, path)}
    return Token.objects.create(user=admin).key, actions, queue


def run_eagerly() -> None:
    """Runs execute inside the request that queues them (as the tests outside tests/queue
    do): for the in-process figures, which have no worker."""
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True


def executor(token: str, actions: dict[int, int]):
    """execute(count): one API call to execute the action with ``count`` keys and wait
    for it, checked (in eager mode, the run has ended when the call returns)."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    def execute(count: int) -> None:
        response = client.post(
            f"/api/v1/actions/{actions[count]}/execute/", {"wait": 10}, format="json"
        )
        assert response.status_code == 200 and response.json()["status"] == "succeeded", (
            response.content
        )

    return execute


def statements(execute) -> dict[int, dict]:
    """The SQL of an execute with 1 and with 50 keys (after a warm-up call each): all of
    it, and how many statements the web and the worker each ran, not counting
    transaction control."""
    from celery.signals import task_postrun, task_prerun
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    marks: list[int] = []  # where in the query log the task started and ended

    def mark(**kwargs: object) -> None:
        marks.append(len(connection.queries_log))

    counted = {}
    for count in (1, 50):
        execute(count)
        marks.clear()
        task_prerun.connect(mark, weak=False)
        task_postrun.connect(mark, weak=False)
        try:
            with CaptureQueriesContext(connection) as captured:
                execute(count)
        finally:
            task_prerun.disconnect(mark)
            task_postrun.disconnect(mark)
        sql = [query["sql"] for query in captured.captured_queries]
        assert len(marks) == 2, f"the task ran {len(marks) // 2} times, not once"
        marks[:] = [position - captured.initial_queries for position in marks]
        worker = sql[marks[0] : marks[1]]
        web = sql[: marks[0]] + sql[marks[1] :]
        counted[count] = {
            "all": len(sql),
            "web": sum(not text.startswith(TRANSACTION_CONTROL) for text in web),
            "worker": sum(not text.startswith(TRANSACTION_CONTROL) for text in worker),
            "transaction_control": sum(text.startswith(TRANSACTION_CONTROL) for text in sql),
            "sql": [
                ("worker: " if marks[0] <= index < marks[1] else "web: ") + text[:110]
                for index, text in enumerate(sql)
            ],
        }
    return counted


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    run_eagerly()
    token, actions, queue = seed(sys.argv[1])
    queries = statements(executor(token, actions))
    print(json.dumps({"token": token, "actions": actions, "queue": queue, "queries": queries}))
