"""Query counts of the hot paths of the performance issue (bench figure 1): a regression
fails `make test`; the timings themselves are measured by `make bench`, never here."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import Personas, api_client_for, http_action
from tests.factories import SecretKeyFactory
from workflows import services

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT")


@pytest.fixture
def throttle_cache_outside_the_database(settings):
    """Production keeps throttle counters in Redis (REDIS_URL); any cache that is not the
    database's stands for it here, so only the execution's own queries are counted."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    yield
    caches["default"].clear()


def _execute_statements(client, action) -> list[str]:
    path = f"/api/v1/actions/{action.pk}/execute/"
    with CaptureQueriesContext(connection) as captured:
        response = client.post(path, {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded", response.json()["error"]
    return [query["sql"] for query in captured.captured_queries]


def test_execute_through_the_api_costs_the_same_queries_for_1_and_50_keys(
    personas: Personas, echo_server, throttle_cache_outside_the_database
):
    workflow = services.create_workflow(personas.admin, name="Bench")
    client = api_client_for(personas.admin)
    statements = {}
    for size in (1, 50):
        keys = SecretKeyFactory.create_batch(size, organization=personas.organization)
        headers = [
            {"name": f"X-{index}", "value": f"{{{{secret:{key.pk}}}}}"}
            for index, key in enumerate(keys)
        ]
        action = services.create_action(
            personas.admin,
            workflow,
            name=f"{size} keys",
            action_type="send_api_request",
            config=http_action(f"{echo_server.url}/echo", headers=headers),
        )
        statements[size] = _execute_statements(client, action)
    assert len(statements[1]) == len(statements[50])
    queries = [sql for sql in statements[50] if not sql.startswith(TRANSACTION_CONTROL)]
    # The web: 1 token + user + membership, 2 action, 3 run queued, 4 room in the
    # organization, 5 sent; the worker (eager here): 6 the run's organization, 7-9 the
    # claim (organization lock, room, queued → running), 10 the run, 11 the runner's
    # membership now, 12 keys with values (all 50), 13 still running (and its keys), 14 the
    # 50 used events (also the keys' last use), 15 the step, 16 the end, 17 any run waiting
    # for room; the web again: 18 the run as it ended, 19 its step, 20 the keys the caller
    # may see named.
    assert len(queries) == 20, "\n".join(queries)
    # With the claim's savepoint and its release (a transaction on a worker).
    assert len(statements[50]) == 22, "\n".join(statements[50])
