"""Fuzzing the whole /api/v1/ with schemathesis, as a member, with REAL ids.

Generated ids almost never name an object, so a plain run mostly meets 404s and never
gets to PATCH, DELETE or execute anything. Here the detail routes also get the ids of
existing objects (the member's own, some they may only Use, and another organization's),
chosen from the generated case itself so that a failing example replays the same way,
and the If-Match header and run inputs are made to fit when the id is real. Every example
runs in a savepoint that is rolled back, so a DELETE does not take the object away from
the examples after it.

Requests go in-process through the WSGI app (``config.wsgi.application``).
``test_fuzzing_reached_every_operation_with_real_ids`` then checks that the fuzzing did
reach each detail operation with real ids, and did more than collect 404s and 400s.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from config.wsgi import application
from secretsapp import services as secret_services
from secretsapp.models import Access, Role, SecretKey
from tests.conftest import RESTRICTED_VALUE, TEAM_VALUE, _EchoHandler, code_action, http_action
from tests.factories import PASSWORD, MembershipFactory, OrganizationFactory
from workflows import runs, webhooks
from workflows import services as workflow_services
from workflows.models import Run

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# A fixed seed: the same cases every run, so a red build is reproducible and the
# reached-operations check below is stable. FUZZ_SEED=<n> explores other cases.
schema.config.seed = int(os.environ.get("FUZZ_SEED", "20261127"))

# Examples per operation in the fuzzing phase; the coverage phase adds its own boundary
# cases. 15 reaches every operation with real ids in about 30 s for the 33 operations;
# FUZZ_MAX_EXAMPLES=<n> digs deeper.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))
FOREIGN_VALUE = "globex-value-Wx6!not-for-eyes"
SECRET_VALUES = (RESTRICTED_VALUE, TEAM_VALUE, FOREIGN_VALUE)


@dataclass
class World:
    """Who calls, and the objects to aim at by the resource in the path
    (``/api/v1/<resource>/{id}/``)."""

    tokens: dict[str, str]
    ids: dict[str, list[Any]] = field(default_factory=dict)
    workflow_inputs: list[str] = field(default_factory=list)


@contextmanager
def in_process_requests() -> Iterator[None]:
    """Calls through the WSGI app in this process, inside the test's transaction.

    Django's test client does the same: it stops the request signals from closing the
    database connection, which would otherwise end the transaction (on PostgreSQL)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@contextmanager
def echo_server() -> Iterator[str]:
    """The suite's echo server (tests/conftest.py), for the whole module; it polls for
    shutdown every 50 ms rather than 500."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _build_world(echo_url: str) -> World:
    acme, globex = OrganizationFactory(name="Acme"), OrganizationFactory(name="Globex")

    def member_of(organization, username: str, role: str):
        return MembershipFactory(user__username=username, organization=organization, role=role).user

    admin = member_of(acme, "alice-admin", Role.ADMIN)
    member_use = member_of(acme, "bob-use", Role.MEMBER)
    member = member_of(acme, "carol-manage", Role.MEMBER)  # the fuzzing member
    member_nothing = member_of(acme, "dave-nothing", Role.MEMBER)
    outsider = member_of(globex, "mallory-outsider", Role.ADMIN)
    group = secret_services.create_group(admin, acme, name="Platform", members=[member_use.pk])
    restricted_key = secret_services.create_secret_key(
        admin,
        name="Stripe live",
        value=RESTRICTED_VALUE,
        access_level=Access.RESTRICTED,
        grants=[
            {"principal_type": "user", "principal_id": member_use.pk, "level": "use"},
            {"principal_type": "user", "principal_id": member.pk, "level": "manage"},
        ],
    )
    team_key = secret_services.create_secret_key(admin, name="Slack webhook", value=TEAM_VALUE)

    workflow = workflow_services.create_workflow(member, name="Nightly", inputs=["day"])
    # Running both steps exercises the sandbox, the HTTP client, references (a fuzzed input
    # goes into the code's variables and the request body) and redaction (a key's value
    # goes into a header, which the echo server sends back).
    compute = workflow_services.create_action(
        member,
        workflow,
        name="Compute",
        action_type="run_code",
        config=code_action("return variables", day="{{inputs.day}}"),
    )
    call = workflow_services.create_action(
        member,
        workflow,
        name="Call",
        action_type="send_api_request",
        config={
            "method": "POST",
            "url": f"{echo_url}/echo",
            "headers": [{"name": "X-Key", "value": team_key.reference}],
            "body": {"type": "fields", "fields": [{"name": "day", "value": "{{inputs.day}}"}]},
        },
    )
    run = runs.enqueue(member, call.workflow, action=call, inputs={"day": "mon"})
    # Never sent to a worker: it stays queued, for cancel to act on (each case rolls back).
    queued = Run.objects.create(
        organization=acme, workflow=workflow, triggered_by=member, inputs={"day": "thu"}
    )

    foreign_key = secret_services.create_secret_key(
        outsider, name="Globex key", value=FOREIGN_VALUE
    )
    foreign_group = secret_services.create_group(outsider, globex, name="Globex ops")
    foreign_workflow = workflow_services.create_workflow(outsider, name="Globex")
    foreign_action = workflow_services.create_action(
        outsider,
        foreign_workflow,
        name="Step",
        action_type="send_api_request",
        config=http_action(f"{echo_url}/echo"),
    )
    foreign_run = runs.enqueue(outsider, foreign_action.workflow, action=foreign_action, inputs={})
    _, hook_token = webhooks.create_or_rotate(member, workflow)

    return World(
        tokens={
            "member": Token.objects.create(user=member).key,
            "admin": Token.objects.create(user=admin).key,
        },
        ids={
            "members": [member_nothing.pk, member.pk, admin.pk, outsider.pk],
            "groups": [group.pk, foreign_group.pk],
            "secrets": [
                str(restricted_key.pk),  # Manage
                str(team_key.pk),  # Use only: writes are 403
                str(foreign_key.pk),  # another organization's: 404
            ],
            "workflows": [workflow.pk, foreign_workflow.pk],
            "actions": [compute.pk, call.pk, foreign_action.pk],
            "runs": [str(queued.pk), str(run.pk), str(foreign_run.pk)],
            "hooks": [hook_token],  # the token of the workflow's webhook
        },
        workflow_inputs=workflow.inputs,
    )


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker) -> Iterator[World]:
    """Built once, inside a transaction rolled back after the module (as Django's
    ``TestCase.setUpTestData`` does); each test (``django_db``) and each example (below)
    runs in a savepoint inside it."""
    with (
        django_db_blocker.unblock(),
        in_process_requests(),
        echo_server() as echo_url,
        transaction.atomic(),
    ):
        yield _build_world(echo_url)
        transaction.set_rollback(True)


# --- Real ids ------------------------------------------------------------------------------


def _resource(path: str) -> str:
    return path.split("/")[3]  # "/api/v1/secrets/{id}/usage/" → "secrets"


def _positive(case, location: ParameterLocation) -> bool:
    """Whether the fuzzer meant this part of the case to be valid: a part generated as
    invalid on purpose (to see it refused) must stay so."""
    component = case.meta.components.get(location) if case.meta else None
    return component is None or component.mode is GenerationMode.POSITIVE


# Filters of the lists that take an id: ?workflow= (actions, runs), ?secret= (audit).
QUERY_FILTERS = {"workflow": "workflows", "secret": "secrets"}


def _choose(case, count: int) -> int:
    """0 … count, from the whole generated case — not only its path, which the coverage
    phase keeps the same across its cases — so Hypothesis replays and shrinks a failure
    the same way. ``count`` means "keep what was generated"."""
    return zlib.crc32(repr(case).encode()) % (count + 1)


def aim_filters_at_real_objects(case, world: World) -> None:
    """A generated ?workflow= or ?secret= filters everything out; a real one lists rows."""
    if not case.query or not _positive(case, ParameterLocation.QUERY):
        return
    for name, resource in QUERY_FILTERS.items():
        if name in case.query:
            pool = world.ids[resource]
            choice = _choose(case, len(pool))
            if choice < len(pool):
                case.query = {**case.query, name: pool[choice]}


def aim_at_real_objects(case, world: World) -> Any | None:
    """Put a real id in the path of most cases (when the fuzzer meant the path to be
    valid) and return it."""
    pool = world.ids.get(_resource(case.operation.path))
    if not pool or "id" not in (case.path_parameters or {}):
        return None
    if not _positive(case, ParameterLocation.PATH):
        return None
    choice = _choose(case, len(pool))
    if choice == len(pool):
        return None  # keep the generated id: unknown ids must be 404s that fit the schema
    real_id = pool[choice]
    case.path_parameters = {**case.path_parameters, "id": real_id}

    if "If-Match" in case.headers and _positive(case, ParameterLocation.HEADER) and choice == 0:
        # A generated If-Match never matches: every write would be a 412. For the key the
        # member manages (first in the pool) send its current ETag; for the others the
        # generated one stays, and whichever refusal comes first answers.
        etag = SecretKey.objects.filter(pk=real_id).first()
        case.headers = {**case.headers, "If-Match": etag.etag if etag else "*"}
    if (
        case.path.endswith(("/execute/", "/runs/"))
        and isinstance(case.body, dict)
        and isinstance(case.body.get("inputs"), dict)
        and _positive(case, ParameterLocation.BODY)
    ):
        # Generated input names are unknown to the workflow (a 400 before anything runs):
        # keep the generated values, under the workflow's input names.
        values = list(case.body["inputs"].values())
        case.body = {
            **case.body,
            "inputs": dict(zip(world.workflow_inputs, values, strict=False)),
        }
    return real_id


def no_secret_value_in_the_response(ctx, response, case) -> None:
    """A value never comes back, whatever the request — the echo server sends the team
    key's value back to every run of the "Call" step, so redaction is fuzzed too."""
    text = response.text
    for value in SECRET_VALUES:
        assert value not in text, f"a secret value is in the response of {case.path}"


# What the fuzzing reached: operation → {"real": cases with a real id, "ok": 2xx among them}.
REACHED: dict[str, dict[str, int]] = defaultdict(lambda: {"real": 0, "ok": 0})


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    # The examples database would replay yesterday's ids, which are gone.
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_fuzz(case, world: World):
    real_id = aim_at_real_objects(case, world)
    aim_filters_at_real_objects(case, world)
    # Every check runs but positive_data_acceptance: no 5xx, documented status codes,
    # content types, headers and bodies, schema-invalid input refused, auth not ignored.
    # Schema-valid input may still be refused by business rules (a taken name, an unknown
    # principal, a reference to a key the member may not Use, a member's PATCH of a
    # member): that is a documented 400/403, not a defect.
    with transaction.atomic():
        response = case.call_and_validate(
            headers={"Authorization": f"Token {world.tokens['member']}"},
            excluded_checks=[positive_data_acceptance],
            additional_checks=[no_secret_value_in_the_response],
        )
        transaction.set_rollback(True)
    if real_id is not None and case.method == case.operation.method.upper():
        # (Cases that probe an undocumented method on the path are not the operation's.)
        reached = REACHED[f"{case.method} {case.path}"]
        reached["real"] += 1
        reached["ok"] += 200 <= response.status_code < 300


# Detail operations a member is never allowed (admins only): reaching them with real ids
# is enough, their 2xx is shown by the explicit examples below.
ADMIN_ONLY = {
    "PATCH /api/v1/members/{id}/",
    "DELETE /api/v1/members/{id}/",
    "PATCH /api/v1/groups/{id}/",
    "DELETE /api/v1/groups/{id}/",
}


def test_fuzzing_reached_every_operation_with_real_ids():
    detail_operations = {
        f"{operation.method.upper()} {operation.path}"
        for operation in (result.ok() for result in schema.get_all_operations())
        if "{id}" in operation.path
    }
    if not REACHED:
        pytest.skip("the fuzz test did not run in this session (run the whole module)")
    unreached = sorted(detail_operations - REACHED.keys())
    never_ok = sorted(
        name for name in detail_operations - ADMIN_ONLY if REACHED.get(name, {}).get("ok", 0) == 0
    )
    summary = {name: dict(counts) for name, counts in sorted(REACHED.items())}
    assert unreached == [], f"never fuzzed with a real id; reached: {summary}"
    assert never_ok == [], f"never answered 2xx with a real id; reached: {summary}"
    print("\nfuzzed with real ids (cases, 2xx):")
    for name, counts in summary.items():
        print(f"  {name}: {counts['real']}, {counts['ok']}")


# --- One known-good request per operation --------------------------------------------------


def _examples(world: World) -> dict[str, tuple[str, dict[str, Any]]]:
    """operation → (persona, Case arguments): a request each operation must accept."""
    ids = {resource: values[0] for resource, values in world.ids.items()}
    member, admin = "member", "admin"
    return {
        "POST /api/v1/auth/token/": (
            member,
            {"body": {"username": "carol-manage", "password": PASSWORD}},
        ),
        "GET /api/v1/auth/whoami/": (member, {}),
        "GET /api/v1/members/": (member, {"query": {"page_size": 2}}),
        "POST /api/v1/members/": (
            admin,
            {
                "body": {
                    "username": "newbie",
                    "email": "newbie@example.com",
                    "password": PASSWORD,
                    "role": "viewer",
                }
            },
        ),
        "GET /api/v1/members/{id}/": (member, {"path_parameters": {"id": ids["members"]}}),
        "PATCH /api/v1/members/{id}/": (
            admin,
            {"path_parameters": {"id": ids["members"]}, "body": {"role": "viewer"}},
        ),
        "DELETE /api/v1/members/{id}/": (admin, {"path_parameters": {"id": ids["members"]}}),
        "GET /api/v1/groups/": (member, {}),
        "POST /api/v1/groups/": (admin, {"body": {"name": "Ops", "members": []}}),
        "GET /api/v1/groups/{id}/": (member, {"path_parameters": {"id": ids["groups"]}}),
        "PATCH /api/v1/groups/{id}/": (
            admin,
            {"path_parameters": {"id": ids["groups"]}, "body": {"name": "Platform team"}},
        ),
        "DELETE /api/v1/groups/{id}/": (admin, {"path_parameters": {"id": ids["groups"]}}),
        "GET /api/v1/secrets/": (member, {"query": {"search": "stripe"}}),
        "POST /api/v1/secrets/": (
            member,
            {
                "body": {
                    "name": "Twilio",
                    "value": "twilio-value-0123456789",
                    "access": "restricted",
                    "grants": [],
                }
            },
        ),
        "GET /api/v1/secrets/{id}/": (member, {"path_parameters": {"id": ids["secrets"]}}),
        "PATCH /api/v1/secrets/{id}/": (
            member,
            {
                "path_parameters": {"id": ids["secrets"]},
                "headers": {"If-Match": "*"},
                "body": {"name": "Stripe (live)"},
            },
        ),
        "DELETE /api/v1/secrets/{id}/": (member, {"path_parameters": {"id": ids["secrets"]}}),
        "GET /api/v1/secrets/{id}/usage/": (member, {"path_parameters": {"id": ids["secrets"]}}),
        "GET /api/v1/audit-events/": (admin, {"query": {"secret": ids["secrets"]}}),
        "GET /api/v1/workflows/": (member, {}),
        "POST /api/v1/workflows/": (member, {"body": {"name": "Hourly", "inputs": ["hour"]}}),
        "GET /api/v1/workflows/{id}/": (member, {"path_parameters": {"id": ids["workflows"]}}),
        "PATCH /api/v1/workflows/{id}/": (
            member,
            {"path_parameters": {"id": ids["workflows"]}, "body": {"name": "Daily"}},
        ),
        "DELETE /api/v1/workflows/{id}/": (member, {"path_parameters": {"id": ids["workflows"]}}),
        "POST /api/v1/workflows/{id}/runs/": (
            member,
            {"path_parameters": {"id": ids["workflows"]}, "body": {"inputs": {"day": "tue"}}},
        ),
        "GET /api/v1/actions/": (member, {"query": {"workflow": ids["workflows"]}}),
        "POST /api/v1/actions/": (
            member,
            {
                "body": {
                    "workflow": ids["workflows"],
                    "name": "Report",
                    "type": "run_code",
                    "config": code_action("return variables", day="{{inputs.day}}"),
                }
            },
        ),
        "GET /api/v1/actions/{id}/": (member, {"path_parameters": {"id": ids["actions"]}}),
        "PATCH /api/v1/actions/{id}/": (
            member,
            {"path_parameters": {"id": ids["actions"]}, "body": {"name": "Compute again"}},
        ),
        "DELETE /api/v1/actions/{id}/": (member, {"path_parameters": {"id": ids["actions"]}}),
        "POST /api/v1/actions/{id}/execute/": (
            member,
            {"path_parameters": {"id": ids["actions"]}, "body": {"inputs": {"day": "wed"}}},
        ),
        "GET /api/v1/runs/": (member, {"query": {"workflow": ids["workflows"]}}),
        "GET /api/v1/runs/{id}/": (member, {"path_parameters": {"id": ids["runs"]}}),
        "POST /api/v1/runs/{id}/cancel/": (member, {"path_parameters": {"id": ids["runs"]}}),
        "GET /api/v1/workflows/{id}/webhook/": (
            member,
            {"path_parameters": {"id": ids["workflows"]}},
        ),
        "POST /api/v1/workflows/{id}/webhook/": (
            member,
            {"path_parameters": {"id": ids["workflows"]}},
        ),
        "DELETE /api/v1/workflows/{id}/webhook/": (
            member,
            {"path_parameters": {"id": ids["workflows"]}},
        ),
        # The token is the credential; the member's API token, sent too, is ignored.
        "POST /hooks/{token}/": (
            member,
            {"path_parameters": {"token": ids["hooks"]}, "body": {"day": "fri"}},
        ),
    }


OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS]
)
def test_every_operation_accepts_an_explicit_example(operation, world: World):
    """Each operation, once, with real ids and a valid body: a 2xx that passes every check
    (positive_data_acceptance included). An operation without an example fails here."""
    name = f"{operation.method.upper()} {operation.path}"
    examples = _examples(world)
    assert name in examples, f"add an explicit example for {name}"
    persona, arguments = examples[name]
    case = operation.Case(**arguments)
    response = case.call_and_validate(headers={"Authorization": f"Token {world.tokens[persona]}"})
    assert 200 <= response.status_code < 300, response.text[:500]


@pytest.mark.django_db
def test_the_examples_cover_exactly_the_schema(world: World):
    # A stale example (an operation removed from the API) is dead weight.
    names = {f"{op.method.upper()} {op.path}" for op in OPERATIONS}
    assert set(_examples(world)) == names


# --- What the fuzzing found ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    ["page_size=%C2%B2", "page_size=%D9%A3", "page=", "page=abc", "page=0", "page=%C2%B2"],
)
def test_paging_that_is_not_a_whole_number_is_a_400(world: World, query: str):
    # "²".isdigit() is true but int("²") raised: a 500 on every list. An empty ?page= was
    # read as page 1 though the schema says integer (accepted schema-violating input).
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {world.tokens['member']}")
    response = client.get(f"/api/v1/secrets/?{query}")
    assert response.status_code == 400
    assert response.json()["detail"]
