"""Races between executions and key writes, through the API with real threads and a real
database (each thread has its own connection, as each gunicorn worker would).

- Executions running while a manager rotates a key's value must each send one whole value,
  old or new: never a mix, never ciphertext, never nothing.
- Two managers changing grants from the same read (same ETag, sent as If-Match): exactly
  one wins, the other gets 412, and the final grants are the winner's. The service holds
  a row lock from the ETag check to the commit; a pause inside that window (below) makes
  the race certain instead of lucky, so a check-then-write without the lock would fail.

CI runs this on PostgreSQL. On SQLite the test database is an in-memory shared-cache
database: its table locks fail at once ("database table is locked") instead of waiting, as
the WAL file a SQLite deployment uses would, so the races are skipped there (see
``require_real_concurrency``).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections

from secretsapp import services as secret_services
from secretsapp.models import AuditAction, AuditEvent, SecretKey
from tests.conftest import Personas, api_client_for, http_action
from workflows import services as workflow_services

THREADS = 8
EXECUTIONS_PER_THREAD = 4
VALUE_UPDATES = 6

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def require_real_concurrency() -> None:
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip(
            "SQLite's in-memory shared-cache test database fails concurrent writers at once "
            "(SQLITE_LOCKED) instead of waiting like the WAL file deployments use; CI runs "
            "these races on PostgreSQL."
        )


def in_threads(*targets: Callable[[], Any]) -> list[BaseException]:
    """Run the targets in parallel threads, each with its own database connection that it
    closes at the end; return what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def body(target: Callable[[], Any]) -> None:
        try:
            start.wait(timeout=10)
            target()
        except BaseException as error:  # reported by the test, not lost with the thread
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return errors


# --- Executions while the value changes -----------------------------------------------------


def test_executions_during_value_updates_always_send_one_whole_value(
    personas: Personas, echo_server, settings
):
    # Runs execute in the threads that queue them (eager here). A run that ends sends the
    # waiting ones, so a thread may execute another's run: each request waits for its own
    # (a waiter per thread), with room for all of them in the organization.
    settings.RUNS_PER_ORGANIZATION = THREADS
    settings.RUNS_MAX_WAITERS = THREADS
    secret_key = personas.team_key
    reference = f"{{{{secret:{secret_key.pk}}}}}"
    workflow = workflow_services.create_workflow(personas.member_use, name="Busy")
    action = workflow_services.create_action(
        personas.member_use,
        workflow,
        name="Call",
        action_type="send_api_request",
        config=http_action(
            f"{echo_server.url}/echo",
            headers=[{"name": "Authorization", "value": f"Bearer {reference}"}],
        ),
    )
    # Distinct values of different lengths: a mix of two could never equal any of them.
    new_values = [
        f"rotated-{index}-{secrets.token_hex(8 + 4 * index)}" for index in range(VALUE_UPDATES)
    ]
    possible = {f"Bearer {value}" for value in [secret_key.value, *new_values]}
    # Tokens are created up front, so the threads only read them; a client per thread, as
    # the test client is not meant to be shared between threads.
    api_client_for(personas.member_use)
    api_client_for(personas.admin)
    outcomes: list[dict[str, Any]] = []

    def execute() -> None:
        runner = api_client_for(personas.member_use)
        for _ in range(EXECUTIONS_PER_THREAD):
            response = runner.post(
                f"/api/v1/actions/{action.pk}/execute/", {"wait": 30}, format="json"
            )
            outcomes.append({"http_status": response.status_code, **response.json()})

    def rotate() -> None:
        manager = api_client_for(personas.admin)
        for value in new_values:
            response = manager.patch(
                f"/api/v1/secrets/{secret_key.pk}/", {"value": value}, format="json"
            )
            assert response.status_code == 200, response.content
            # Spread the updates over the executions rather than doing them all at once.
            time.sleep(0.02)

    errors = in_threads(*[execute] * THREADS, rotate)

    assert errors == []
    assert len(outcomes) == THREADS * EXECUTIONS_PER_THREAD
    for outcome in outcomes:
        assert outcome["http_status"] == 200, outcome
        assert outcome["status"] == "succeeded", outcome
    received = [request["headers"].get("Authorization") for request in echo_server.requests]
    assert len(received) == THREADS * EXECUTIONS_PER_THREAD
    # Each request carried one whole value; a ciphertext, an empty value or a mix of two
    # would not be among them.
    assert set(received) <= possible, set(received) - possible
    # The race really happened: executions saw the value before and after some update.
    assert len(set(received)) >= 2
    secret_key.refresh_from_db()
    assert secret_key.version == 1 + VALUE_UPDATES
    assert secret_key.value == new_values[-1]
    used = AuditEvent.objects.filter(secret_key_id=secret_key.pk, action=AuditAction.USED)
    assert used.count() == THREADS * EXECUTIONS_PER_THREAD


# --- Two managers, one ETag -----------------------------------------------------------------


@pytest.fixture
def slow_grant_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pause inside the write, after the ETag check and the grant change, before the
    commit: the other manager's request arrives while this one still holds its view."""
    apply_grants = secret_services._apply_grants

    def slow_apply_grants(*arguments: Any, **keywords: Any) -> Any:
        changes = apply_grants(*arguments, **keywords)
        time.sleep(0.3)
        return changes

    monkeypatch.setattr(secret_services, "_apply_grants", slow_apply_grants)
    yield


def grant(principal_type: str, principal_id: int, level: str) -> dict[str, Any]:
    return {"principal_type": principal_type, "principal_id": principal_id, "level": level}


def as_set(grants: list[dict[str, Any]]) -> set[tuple[str, int, str]]:
    return {(item["principal_type"], item["principal_id"], item["level"]) for item in grants}


@pytest.mark.parametrize("round_number", range(3))
def test_two_managers_with_the_same_etag_one_wins_the_other_gets_412(
    personas: Personas, slow_grant_writes: None, round_number: int
):
    secret_key = personas.restricted_key
    url = f"/api/v1/secrets/{secret_key.pk}/"
    managers = {"admin": personas.admin, "member_manage": personas.member_manage}
    clients = {name: api_client_for(user) for name, user in managers.items()}
    read = clients["admin"].get(url)
    etag = read["ETag"]
    assert clients["member_manage"].get(url)["ETag"] == etag
    # Both keep carol's Manage (she is one of the managers); otherwise they disagree.
    requests = {
        "admin": [
            grant("user", personas.member_manage.pk, "manage"),
            grant("group", personas.group.pk, "use"),
        ],
        "member_manage": [
            grant("user", personas.member_manage.pk, "manage"),
            grant("user", personas.member_use.pk, "manage"),
            grant("user", personas.viewer.pk, "use"),
        ],
    }
    responses: dict[str, Any] = {}

    def change(name: str) -> Callable[[], None]:
        def patch() -> None:
            responses[name] = clients[name].patch(
                url, {"grants": requests[name]}, format="json", HTTP_IF_MATCH=etag
            )

        return patch

    errors = in_threads(change("admin"), change("member_manage"))

    assert errors == []
    statuses = {name: response.status_code for name, response in responses.items()}
    assert sorted(statuses.values()) == [200, 412], statuses
    [winner] = [name for name, status in statuses.items() if status == 200]
    [loser] = [name for name, status in statuses.items() if status == 412]
    assert "changed" in responses[loser].json()["detail"]
    final = clients["admin"].get(url)
    assert as_set(final.json()["grants"]) == as_set(requests[winner])
    assert final["ETag"] != etag
    changes = AuditEvent.objects.filter(
        secret_key_id=secret_key.pk, action=AuditAction.GRANTS_CHANGED
    )
    assert changes.count() == 1

    # Nothing is lost silently: the loser, told so, reads again and its retry goes through.
    retry = clients[loser].patch(
        url, {"grants": requests[loser]}, format="json", HTTP_IF_MATCH=final["ETag"]
    )
    assert retry.status_code == 200, retry.content
    assert as_set(clients["admin"].get(url).json()["grants"]) == as_set(requests[loser])
    assert SecretKey.objects.get(pk=secret_key.pk).version == 1


# --- A workflow change racing a save that adds a key ----------------------------------------


def test_a_change_that_waits_on_a_save_adding_a_key_is_judged_with_that_key(
    personas: Personas, echo_server, monkeypatch
):
    """bob adds a step holding the Restricted key while dave (no Use) re-points another
    step. The rule is checked under the workflow's row lock, so dave's change, which waits
    for bob's save, sees the key and is refused; a check made before taking the lock would
    have let it through. A pause inside bob's save makes the race certain."""
    workflow = workflow_services.create_workflow(personas.member_use, name="Race")
    public = workflow_services.create_action(
        personas.member_use,
        workflow,
        name="Public",
        action_type="send_api_request",
        config=http_action(f"{echo_server.url}/echo"),
    )
    reference = f"{{{{secret:{personas.restricted_key.pk}}}}}"
    save_index = workflow_services._save_index

    def slow_save_index(action, references) -> None:
        save_index(action, references)
        if references:  # bob's save, holding the lock until it commits
            time.sleep(0.5)

    monkeypatch.setattr(workflow_services, "_save_index", slow_save_index)
    api_client_for(personas.member_use)
    api_client_for(personas.member_nothing)
    answers: dict[str, int] = {}

    def add_key() -> None:
        response = api_client_for(personas.member_use).post(
            "/api/v1/actions/",
            {
                "workflow": workflow.pk,
                "name": "Charge",
                "type": "send_api_request",
                "config": http_action(
                    f"{echo_server.url}/echo", headers=[{"name": "X-Key", "value": reference}]
                ),
            },
            format="json",
        )
        answers["bob"] = response.status_code

    def repoint() -> None:
        time.sleep(0.2)  # bob holds the lock by now
        response = api_client_for(personas.member_nothing).patch(
            f"/api/v1/actions/{public.pk}/",
            {"config": http_action("http://127.0.0.1:9/attacker")},
            format="json",
        )
        answers["dave"] = response.status_code

    assert in_threads(add_key, repoint) == []
    assert answers == {"bob": 201, "dave": 403}
    public.refresh_from_db()
    assert public.config["url"] == f"{echo_server.url}/echo"
