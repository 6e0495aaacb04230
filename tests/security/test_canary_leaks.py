"""The canary leak scan (issue 6): a secret value appears nowhere but in the outbound
request it was meant for.

One scenario makes keys with unique canary values (characters that need URL, JSON, HTML
and string-literal escaping, and a non-ASCII letter) through the services, the API, the
pages and Django admin; uses them in every kind of action, run every way (services, API,
pages) by several personas; renames them, updates their values and makes things fail.
Then it crawls every page, admin page and API route of the URL conf as every persona that
can see them, reads every stored row, every log record and stdout/stderr, and every column
of every table through a raw cursor — and asserts that no canary is found in any form. The
echo server is the one place the values must be: the test asserts it got them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import pickle
import socket
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import httpx
import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db import connection
from django.http import HttpResponseBase
from django.test import Client, override_settings
from rest_framework.test import APIClient

from secretsapp import services as secret_services
from secretsapp.models import Access, AuditEvent, OrganizationGroup, SecretKey
from tests.conftest import (
    RESTRICTED_VALUE,
    TEAM_VALUE,
    Personas,
    api_client_for,
    code_action,
    http_action,
)
from tests.security.crawl import (
    Canary,
    LeakScanner,
    Route,
    as_text,
    discover_routes,
    dump_database,
    fill_route,
    form_fields,
    leak_forms,
    page_links,
)
from workflows import runs, sandbox
from workflows import services as workflow_services
from workflows.models import Action, Run, RunStep, Workflow
from workflows.redaction import Redactor, redacting_logs

User = get_user_model()

BASIC_AUTH_USER = "apiuser"
PAGE_PERSONAS = ("admin", "member_use", "member_manage", "viewer")
API_PERSONAS = ("admin", "member_use", "viewer")
# Pages reached by following links, per persona: enough for every list, filter and page
# of the scenario, bounded so that a link loop cannot stall the suite.
MAX_FOLLOWED_LINKS = 400
ENCRYPTED_COLUMN = ("secretsapp_secretkey", "value")
# The sandbox cuts an error message to size: "ValueError: " and this much
# padding leave the first 48 characters of a value before the cut.
LONG_MESSAGE_PADDING = sandbox.MAX_MESSAGE_CHARACTERS - len("ValueError: ") - 48
# A small output limit for one action, so that its logs are cut inside a value.
LOGS_LIMIT = 4_096

# Routes of today's URL conf the crawl must reach with a 200, so route discovery cannot
# silently find nothing. New routes are crawled without being listed here.
EXPECTED_PAGES = {
    "workflows:list",
    "workflows:edit",
    "workflows:runs",
    "workflows:run",
    "secretsapp:keys",
    "secretsapp:picker",
    "secretsapp:names",
    "secretsapp:create",
    "secretsapp:manage",
    "secretsapp:detail",
    "secretsapp:audit",
    "login",
    "api-docs",
}
EXPECTED_API_ROUTES = {
    "api:whoami",
    "api:member-list",
    "api:member-detail",
    "api:group-list",
    "api:group-detail",
    "api:secret-list",
    "api:secret-detail",
    "api:secret-usage",
    "api:audit-event-list",
    "api:workflow-list",
    "api:workflow-detail",
    "api:action-list",
    "api:action-detail",
    "api:run-list",
    "api:run-detail",
    "schema",
}
EXPECTED_ADMIN_MODELS = {
    "secretsapp_secretkey",
    "secretsapp_membership",
    "secretsapp_organizationgroup",
    "secretsapp_auditevent",
    "secretsapp_organization",
    "auth_user",
    "auth_group",
    "authtoken_tokenproxy",
}
# Admin pages that answer 403 to everyone: the audit log is append-only, and organizations
# are never deleted.
REFUSED_ADMIN_PAGES = {
    ("secretsapp_auditevent", "add"),
    ("secretsapp_auditevent", "delete"),
    ("secretsapp_organization", "delete"),
}
EXPECTED_TABLES = {
    "secretsapp_secretkey",
    "secretsapp_auditevent",
    "workflows_run",
    "workflows_runstep",
    "workflows_action",
    "django_session",
    "django_admin_log",
    "django_cache",
}


def _ref(secret_key: SecretKey) -> str:
    return f"{{{{secret:{secret_key.pk}}}}}"


@dataclass
class Scan:
    """What the test collects: the scanner, the routes reached, and counters."""

    scanner: LeakScanner
    statuses: dict[str, Counter] = field(default_factory=dict)  # route name → statuses
    counts: Counter = field(default_factory=Counter)

    def response(
        self, category: str, where: str, response: HttpResponseBase, route: str | None = None
    ) -> str:
        """Scan a response's body, headers and cookies; return the body as text."""
        body = b"".join(response.streaming_content) if response.streaming else response.content
        text = body.decode(response.charset or "utf-8", errors="replace")
        where = f"{where} ({response.status_code})"
        self.scanner.scan(category, where, text)
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        cookies = response.cookies.output() if response.cookies else ""
        self.scanner.scan(category + " headers", f"{where}, response headers", headers + cookies)
        if route:
            self.statuses.setdefault(route, Counter())[response.status_code] += 1
        return text


# --- The scenario ------------------------------------------------------------------------


@dataclass
class Scenario:
    canaries: dict[str, Canary]
    keys: dict[str, SecretKey]
    group: OrganizationGroup
    workflows: list[Workflow]
    superuser: Any
    used: list[str]  # canaries the echo server must have received
    never_sent: list[str]  # canaries typed in but refused: they must go nowhere


CANARY_LABELS = [
    "team (service), first value",
    "team (service), updated value",
    "restricted (service)",
    "team (API), first value",
    "team (API), updated value",
    "restricted (API)",
    "team (page), first value",
    "team (page), updated value",
    "restricted (page)",
    "restricted (admin), first value",
    "restricted (admin), updated value",
    "deleted key",
    "refused by the page",
    "refused by the API",
    "refused by the admin",
]


def _new_canaries(echo_url: str) -> dict[str, Canary]:
    canaries = {label: Canary.new(label) for label in CANARY_LABELS}
    # A whole webhook URL kept as a key: it starts an action's URL and goes in as is.
    webhook = Canary.new("webhook URL")
    canaries["webhook URL"] = Canary(
        "webhook URL", f"{echo_url}/hook/{webhook.value}", webhook.marker
    )
    multiline = Canary.new("multiline")
    # No space: a target that decodes "+" as "+" would echo a form nobody could predict.
    canaries["multiline"] = Canary("multiline", multiline.value + "\nsecond-line", multiline.marker)
    # The fixture's keys are secrets too, although the scenario does not use them.
    canaries["fixture restricted key"] = Canary("fixture restricted key", RESTRICTED_VALUE)
    canaries["fixture team key"] = Canary("fixture team key", TEAM_VALUE)
    return canaries


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _page_client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@dataclass
class _Actors:
    """Who acts in the scenario, through which client, and how responses are recorded."""

    personas: Personas
    pages: dict[str, Client]
    apis: dict[str, APIClient]
    record: Callable[[str, HttpResponseBase], HttpResponseBase]
    value: dict[str, str]  # canary label → value


def _make_keys(actors: _Actors, group: OrganizationGroup) -> dict[str, SecretKey]:
    """Keys through the services, the API, the pages and Django admin, Team and
    Restricted with user and group grants; and values refused by each of the last three."""
    admin_user, member_use = actors.personas.admin, actors.personas.member_use
    organization, value = actors.personas.organization, actors.value
    pages, apis, record = actors.pages, actors.apis, actors.record
    use_grant = {"principal_type": "user", "principal_id": member_use.pk, "level": "use"}

    # Keys through the services.
    keys: dict[str, SecretKey] = {}
    keys["team (service)"] = secret_services.create_secret_key(
        admin_user, name="Canary team (service)", value=value["team (service), first value"]
    )
    keys["restricted (service)"] = secret_services.create_secret_key(
        admin_user,
        name="Canary restricted (service)",
        value=value["restricted (service)"],
        access_level=Access.RESTRICTED,
        grants=[
            use_grant,
            {"principal_type": "group", "principal_id": group.pk, "level": "manage"},
        ],
    )
    keys["deleted"] = secret_services.create_secret_key(
        member_use, name="Canary doomed", value=value["deleted key"]
    )
    keys["multiline"] = secret_services.create_secret_key(
        admin_user, name="Canary multiline", value=value["multiline"]
    )
    keys["webhook"] = secret_services.create_secret_key(
        admin_user, name="Canary webhook", value=value["webhook URL"]
    )

    # Keys through the API.
    response = record(
        "POST /api/v1/secrets/ (team)",
        apis["member_manage"].post(
            "/api/v1/secrets/",
            {"name": "Canary team (API)", "value": value["team (API), first value"]},
            format="json",
        ),
    )
    assert response.status_code == 201, response.content
    keys["team (API)"] = SecretKey.objects.get(pk=response.json()["id"])
    response = record(
        "POST /api/v1/secrets/ (restricted)",
        apis["admin"].post(
            "/api/v1/secrets/",
            {
                "name": "Canary restricted (API)",
                "value": value["restricted (API)"],
                "access": "restricted",
                "grants": [
                    use_grant,
                    {"principal_type": "group", "principal_id": group.pk, "level": "use"},
                ],
            },
            format="json",
        ),
    )
    assert response.status_code == 201, response.content
    keys["restricted (API)"] = SecretKey.objects.get(pk=response.json()["id"])
    response = record(
        "POST /api/v1/secrets/ (duplicate name)",
        apis["admin"].post(
            "/api/v1/secrets/",
            {"name": "canary team (api)", "value": value["refused by the API"]},
            format="json",
        ),
    )
    assert response.status_code == 400, response.content

    # Keys through the pages (the Create Secret Key modal).
    response = record(
        "POST /keys/new/ (team)",
        pages["member_use"].post(
            "/keys/new/",
            {
                "name": "Canary team (page)",
                "value": value["team (page), first value"],
                "access": "team",
            },
        ),
    )
    assert response.status_code == 201, response.content
    keys["team (page)"] = SecretKey.objects.get(
        organization=organization, name="Canary team (page)"
    )
    response = record(
        "POST /keys/new/ (restricted)",
        pages["admin"].post(
            "/keys/new/",
            {
                "name": "Canary restricted (page)",
                "value": value["restricted (page)"],
                "access": "restricted",
                "grant-principal": [f"user:{member_use.pk}", f"group:{group.pk}"],
                "grant-level": ["use", "manage"],
            },
        ),
    )
    assert response.status_code == 201, response.content
    keys["restricted (page)"] = SecretKey.objects.get(
        organization=organization, name="Canary restricted (page)"
    )
    response = record(
        "POST /keys/new/ (duplicate name)",
        pages["admin"].post(
            "/keys/new/",
            {"name": "Canary team (page)", "value": value["refused by the page"], "access": "team"},
        ),
    )
    assert response.status_code == 422, response.content

    # A key through Django admin, with a grant row to a user and one to a group.
    admin_page = pages["admin"]

    def admin_key_form(name: str, new_value: str) -> dict[str, Any]:
        return {
            "name": name,
            "new_value": new_value,
            "access": "restricted",
            "user_grants-TOTAL_FORMS": "1",
            "user_grants-INITIAL_FORMS": "0",
            "user_grants-0-user": str(member_use.pk),
            "user_grants-0-level": "use",
            "group_grants-TOTAL_FORMS": "1",
            "group_grants-INITIAL_FORMS": "0",
            "group_grants-0-group": str(group.group_id),
            "group_grants-0-level": "use",
            "_save": "Save",
        }

    record("GET admin add key", admin_page.get("/admin/secretsapp/secretkey/add/"))
    response = record(
        "POST admin add key",
        admin_page.post(
            "/admin/secretsapp/secretkey/add/",
            admin_key_form("Canary restricted (admin)", value["restricted (admin), first value"]),
        ),
    )
    assert response.status_code == 302, response.content
    keys["restricted (admin)"] = SecretKey.objects.get(
        organization=organization, name="Canary restricted (admin)"
    )
    response = record(
        "POST admin add key (duplicate name)",
        admin_page.post(
            "/admin/secretsapp/secretkey/add/",
            admin_key_form("Canary restricted (admin)", value["refused by the admin"]),
        ),
    )
    assert response.status_code == 200 and b"errorlist" in response.content
    return keys


def _make_actions(
    member_use: Any, keys: dict[str, SecretKey], echo: str
) -> tuple[Workflow, Workflow, dict[str, Action]]:
    """A workflow that sends and prints every value every way, and a workflow of actions
    that fail (or meet a failing target), each executed on its own."""
    calls = workflow_services.create_workflow(member_use, name="Canary calls", inputs=["note"])

    def add(workflow: Workflow, name: str, action_type: str, config: dict) -> Action:
        return workflow_services.create_action(
            member_use, workflow, name=name, action_type=action_type, config=config
        )

    add(
        calls,
        "Echo everything",
        "send_api_request",
        http_action(
            f"{echo}/echo/{_ref(keys['team (service)'])}/tail",
            method="POST",
            query=[{"name": "k", "value": _ref(keys["restricted (service)"])}],
            headers=[
                {"name": "Authorization", "value": f"Bearer {_ref(keys['team (API)'])}"},
                {"name": "X-Key", "value": _ref(keys["restricted (API)"])},
            ],
            body={
                "type": "raw",
                "raw": '{"secret": "SECRET", "note": "{{inputs.note}}"}'.replace(
                    "SECRET", _ref(keys["team (page)"])
                ),
            },
        ),
    )
    add(
        calls,
        "Basic auth header",
        "run_code",
        code_action(
            "import base64\n"
            f"credentials = ('{BASIC_AUTH_USER}:' + variables['password']).encode()\n"
            "return {'authorization': 'Basic ' + base64.b64encode(credentials).decode()}",
            password=_ref(keys["restricted (page)"]),
        ),
    )
    add(
        calls,
        "Leaky target",
        "send_api_request",
        http_action(
            f"{echo}/raw",
            method="PUT",
            query=[{"name": "q", "value": _ref(keys["multiline"])}],
            headers=[{"name": "Authorization", "value": "{{steps.2.result.authorization}}"}],
            body={
                "type": "fields",
                "fields": [{"name": "token", "value": _ref(keys["restricted (admin)"])}],
            },
        ),
    )
    add(
        calls,
        "Python prints",
        "run_code",
        code_action(
            "import json, sys\n"
            "print(variables['key'])\n"
            "print(variables)\n"
            "print(repr(variables['key']), file=sys.stderr)\n"
            "return {'value': variables['key'], 'json': json.dumps(variables), 'all': variables}",
            key=_ref(keys["restricted (service)"]),
            other=_ref(keys["team (service)"]),
        ),
    )
    add(
        calls,
        "JavaScript prints",
        "run_code",
        code_action(
            "console.log(variables.key);\n"
            "console.log(variables);\n"
            "console.error(JSON.stringify(variables));\n"
            "return {value: variables.key, all: variables,\n"
            f"  basic: Buffer.from('{BASIC_AUTH_USER}:' + variables.key).toString('base64')}};",
            language="javascript",
            key=_ref(keys["restricted (API)"]),
            other=_ref(keys["multiline"]),
        ),
    )

    # One action per failure, executed on its own (a failed step ends a workflow run).
    failures = workflow_services.create_workflow(member_use, name="Canary failures")
    failing: dict[str, Action] = {
        "target 500": add(
            failures,
            "Target answers 500",
            "send_api_request",
            http_action(
                f"{echo}/status/500",
                method="POST",
                headers=[{"name": "X-Key", "value": _ref(keys["team (service)"])}],
                body={
                    "type": "fields",
                    "fields": [{"name": "token", "value": _ref(keys["team (API)"])}],
                },
            ),
        ),
        "python raises": add(
            failures,
            "Python raises",
            "run_code",
            code_action(
                "raise ValueError('bad key ' + variables['key'])", key=_ref(keys["team (page)"])
            ),
        ),
        "python raises repr": add(
            failures,
            "Python raises with a repr",
            "run_code",
            code_action("raise KeyError(variables['key'])", key=_ref(keys["restricted (service)"])),
        ),
        "python prints then fails": add(
            failures,
            "Python prints then fails",
            "run_code",
            code_action(
                "print('key:', variables['key'])\nreturn 1 / 0", key=_ref(keys["team (API)"])
            ),
        ),
        "javascript throws": add(
            failures,
            "JavaScript throws",
            "run_code",
            code_action(
                "throw new Error('bad key ' + variables.key);",
                language="javascript",
                key=_ref(keys["restricted (page)"]),
            ),
        ),
        "javascript throws a value": add(
            failures,
            "JavaScript throws a value",
            "run_code",
            code_action(
                "throw variables.key;", language="javascript", key=_ref(keys["restricted (admin)"])
            ),
        ),
        "unreachable": add(
            failures,
            "Unreachable target",
            "send_api_request",
            http_action(
                f"http://127.0.0.1:{_closed_port()}/x/{_ref(keys['team (service)'])}",
                headers=[{"name": "X-Key", "value": _ref(keys["restricted (API)"])}],
            ),
        ),
        "line break in a header": add(
            failures,
            "Header with a line break",
            "send_api_request",
            http_action(
                f"{echo}/echo", headers=[{"name": "X-Multi", "value": _ref(keys["multiline"])}]
            ),
        ),
        "deleted key": add(
            failures,
            "Uses the doomed key",
            "send_api_request",
            http_action(
                f"{echo}/echo/{_ref(keys['deleted'])}",
                headers=[{"name": "X-Doomed", "value": _ref(keys["deleted"])}],
            ),
        ),
        "webhook": add(
            failures,
            "Calls the webhook URL key",
            "send_api_request",
            http_action(_ref(keys["webhook"]) + "?from=canary", method="POST"),
        ),
        # Error messages and logs are cut at a size limit: a value straddling the cut
        # must not survive as its first few dozen characters.
        "long error message": add(
            failures,
            "Python raises a long message",
            "run_code",
            code_action(
                f"raise ValueError('x' * {LONG_MESSAGE_PADDING} + variables['key'])",
                key=_ref(keys["restricted (admin)"]),
            ),
        ),
        "long logs": add(
            failures,
            "Python prints past the output limit",
            "run_code",
            code_action(
                f"print('x' * {LOGS_LIMIT - 48}, variables['key'], sep='')",
                key=_ref(keys["team (page)"]),
            ),
        ),
    }
    return calls, failures, failing


def _run_scenario(
    personas: Personas, echo_server: Any, scan: Scan, canaries: dict[str, Canary]
) -> Scenario:
    """Keys and actions made, run every way with the first values, renamed, updated,
    regranted and deleted, then run again: every response scanned on the way."""
    value = {label: canary.value for label, canary in canaries.items()}
    admin_user, member_use, member_manage = (
        personas.admin,
        personas.member_use,
        personas.member_manage,
    )
    organization = personas.organization
    pages = {
        name: _page_client(personas.by_name(name)) for name in (*PAGE_PERSONAS, "member_nothing")
    }
    apis = {
        name: api_client_for(personas.by_name(name))
        for name in (*API_PERSONAS, "member_manage", "member_nothing")
    }

    def record(where: str, response: HttpResponseBase) -> HttpResponseBase:
        scan.response("scenario responses", f"scenario: {where}", response)
        return response

    actors = _Actors(personas, pages, apis, record, value)

    group = secret_services.create_group(
        admin_user, organization, name="Canary ops", members=[member_manage, personas.viewer]
    )
    keys = _make_keys(actors, group)
    admin_page = pages["admin"]
    calls, failures, failing = _make_actions(member_use, keys, echo_server.url)

    # --- Runs with the first values: through the service and the API ---
    run = runs.enqueue(member_use, calls, {"note": "through the service"})
    assert run.status == "succeeded", [step.error for step in list(run.steps.all())]
    response = record(
        "POST /api/v1/workflows/{id}/runs/ (member with Use)",
        apis["member_use"].post(
            f"/api/v1/workflows/{calls.pk}/runs/", {"inputs": {"note": "api"}}, format="json"
        ),
    )
    assert response.status_code == 200 and response.json()["status"] == "succeeded", (
        response.content
    )
    # A member without Use on the restricted keys: the run fails, nothing is sent.
    requests_before = len(echo_server.requests)
    response = record(
        "POST /api/v1/workflows/{id}/runs/ (member without Use)",
        apis["member_nothing"].post(
            f"/api/v1/workflows/{calls.pk}/runs/", {"inputs": {}}, format="json"
        ),
    )
    assert response.status_code == 200 and response.json()["status"] == "failed", response.content
    assert len(echo_server.requests) == requests_before

    for name, action in failing.items():
        if name in ("python raises repr", "javascript throws a value", "target 500"):
            response = record(
                f"POST /api/v1/actions/{{id}}/execute/ ({name})",
                apis["admin"].post(f"/api/v1/actions/{action.pk}/execute/", {}, format="json"),
            )
            assert response.status_code == 200, response.content
            status = response.json()["status"]
        elif name == "long logs":
            with override_settings(SANDBOX_MAX_OUTPUT_BYTES=LOGS_LIMIT):
                status = runs.enqueue(member_use, action.workflow, action=action, inputs={}).status
        else:
            status = runs.enqueue(member_use, action.workflow, action=action, inputs={}).status
        expected = "succeeded" if name in ("target 500", "deleted key", "webhook") else "failed"
        assert status == expected, name

    # --- Renames, value updates, access changes, a deletion ---
    secret_services.rename_secret_key(
        admin_user, keys["restricted (service)"], "Canary renamed (service)"
    )
    secret_services.update_secret_value(
        admin_user, keys["team (service)"], value["team (service), updated value"]
    )
    key = keys["team (API)"]
    etag = record(
        "GET /api/v1/secrets/{id}/", apis["member_manage"].get(f"/api/v1/secrets/{key.pk}/")
    )["ETag"]
    response = record(
        "PATCH /api/v1/secrets/{id}/ (value)",
        apis["member_manage"].patch(
            f"/api/v1/secrets/{key.pk}/",
            {"value": value["team (API), updated value"]},
            format="json",
            HTTP_IF_MATCH=etag,
        ),
    )
    assert response.status_code == 200, response.content
    response = record(
        "PATCH /api/v1/secrets/{id}/ (name)",
        apis["admin"].patch(
            f"/api/v1/secrets/{keys['restricted (API)'].pk}/",
            {"name": "Canary renamed (API)"},
            format="json",
        ),
    )
    assert response.status_code == 200, response.content
    response = record(
        "POST /keys/{id}/value/",
        pages["member_use"].post(
            f"/keys/{keys['team (page)'].pk}/value/", {"value": value["team (page), updated value"]}
        ),
    )
    assert response.status_code == 200, response.content
    for confirm in ("", "yes"):
        response = record(
            "POST /keys/{id}/rename/",
            pages["admin"].post(
                f"/keys/{keys['restricted (page)'].pk}/rename/",
                {"name": "Canary renamed (page)", "confirm": confirm},
            ),
        )
        assert response.status_code == 200, response.content
    response = record(
        "POST /keys/{id}/access/",
        pages["admin"].post(
            f"/keys/{keys['team (page)'].pk}/access/",
            {
                "access": "restricted",
                "grant-principal": [f"group:{group.pk}"],
                "grant-level": ["use"],
            },
        ),
    )
    assert response.status_code == 200, response.content

    # Django admin: a new value on the key's change page, the grant rows posted as shown.
    change_url = f"/admin/secretsapp/secretkey/{keys['restricted (admin)'].pk}/change/"
    fields = form_fields(
        record("GET admin change key", admin_page.get(change_url)).content.decode()
    )
    fields.pop("csrfmiddlewaretoken", None)
    fields["new_value"] = [value["restricted (admin), updated value"]]
    fields["_save"] = ["Save"]
    response = record("POST admin change key", admin_page.post(change_url, fields))
    assert response.status_code == 302, response.content

    response = record(
        "DELETE /api/v1/secrets/{id}/",
        apis["member_use"].delete(f"/api/v1/secrets/{keys['deleted'].pk}/"),
    )
    assert response.status_code == 204, response.content
    response = record(
        "POST /api/v1/actions/{id}/execute/ (deleted key)",
        apis["member_use"].post(
            f"/api/v1/actions/{failing['deleted key'].pk}/execute/", {}, format="json"
        ),
    )
    assert response.json()["status"] == "failed" and "was deleted" in response.json()["error"]

    # --- A run with the updated values, from the page, by a viewer (Use through the group) ---
    response = record(
        "POST /workflows/{id}/run/ (viewer, updated values)",
        pages["viewer"].post(f"/workflows/{calls.pk}/run/", {"input-note": "page"}, follow=True),
    )
    assert response.status_code == 200
    assert b'<span class="status succeeded">Succeeded</span>' in response.content
    response = record(
        "POST /api/v1/actions/{id}/execute/ (updated values)",
        apis["member_use"].post(
            f"/api/v1/actions/{failing['target 500'].pk}/execute/", {}, format="json"
        ),
    )
    assert response.json()["output"]["status_code"] == 500

    superuser = User.objects.create_superuser(
        "root-canary", "root@example.com", "Canary-root-2026!"
    )
    return Scenario(
        canaries=canaries,
        keys=keys,
        group=group,
        workflows=[calls, failures],
        superuser=superuser,
        used=[label for label in canaries if not label.startswith(("refused", "fixture"))],
        never_sent=[label for label in canaries if label.startswith("refused")],
    )


# --- What the target received ------------------------------------------------------------


def _received_texts(requests: Iterable[dict[str, Any]], base_url: str) -> list[str]:
    """Everything the echo server got, decoded the way the receiving API would."""
    texts: list[str] = []
    for request in requests:
        texts.append(unquote(request["path"]))
        # A whole URL kept as a key arrives as this server's URL.
        texts.append(base_url + unquote(request["path"]))
        texts += [value for _, value in parse_qsl(request["query"])]
        for header_value in request["headers"].values():
            # http.server reads header bytes as ISO-8859-1; the app sent UTF-8.
            header_text = header_value.encode("latin-1").decode("utf-8", errors="replace")
            texts.append(header_text)
            scheme, _, credentials = header_text.partition(" ")
            if scheme == "Basic":
                texts.append(base64.b64decode(credentials).decode("utf-8"))
        texts.append(request["body"])
        try:
            body = json.loads(request["body"])
        except ValueError:
            continue
        if isinstance(body, dict):
            texts += [item for item in body.values() if isinstance(item, str)]
    return texts


# --- The crawls --------------------------------------------------------------------------


def _candidates(scenario: Scenario, personas: Personas):
    keys = list(SecretKey.objects.values_list("pk", flat=True)) + [scenario.keys["deleted"].pk]
    runs = list(Run.objects.values_list("pk", flat=True))
    workflows = [workflow.pk for workflow in scenario.workflows]
    by_name: dict[str, list[Any]] = {
        "secret_id": keys,
        "workflow_id": workflows,
        "run_id": runs,
        "group_id": list(OrganizationGroup.objects.values_list("pk", flat=True)),
        "app_label": sorted({model._meta.app_label for model in admin.site._registry}),
        "url": ["no-such-page/"],
    }
    integers = [
        *workflows,
        *Action.objects.values_list("pk", flat=True),
        *OrganizationGroup.objects.values_list("pk", flat=True),
        *User.objects.values_list("pk", flat=True),
    ]

    def candidates(route: Route, name: str, converter: str) -> list[str]:
        model_admin = route.model_admin
        if model_admin is not None and name in ("object_id", "id"):
            return [
                str(pk) for pk in model_admin.model._default_manager.values_list("pk", flat=True)
            ]
        view_class = route.view_class
        queryset = getattr(view_class, "queryset", None)
        if queryset is not None and name in ("pk", getattr(view_class, "lookup_url_kwarg", None)):
            lookup = getattr(view_class, "lookup_field", "pk")
            return [
                str(item) for item in queryset.model._default_manager.values_list(lookup, flat=True)
            ]
        if name in by_name:
            return [str(item) for item in by_name[name]]
        # A parameter this test does not know yet: try every id of the scenario.
        if converter == "int":
            return [str(item) for item in integers]
        if converter == "uuid":
            return [str(item) for item in (*keys, *runs)]
        return [str(item) for item in (*keys, *runs, *integers)]

    workflow_type = ContentType.objects.get_for_model(Workflow)
    pairs = {
        ("workflow_id", "action_id"): [
            (str(action.workflow_id), str(action.pk)) for action in Action.objects.all()
        ],
        ("content_type_id", "object_id"): [(str(workflow_type.pk), str(workflows[0]))],
    }
    return candidates, pairs


def _crawl(
    scan: Scan,
    category: str,
    persona: str,
    client: Client,
    seeds: list[tuple[str, str | None]],
    follow: Any,
) -> None:
    """GET every seed, then every same-site link the pages lead to that ``follow`` accepts.

    A route that refuses GET (405: a POST-only view) for its first object refuses it for
    every object: it is requested once per persona, which keeps the crawl fast without
    losing a page that renders anything."""
    queue = deque(seeds)
    seen = {path for path, _ in seeds}
    followed = 0
    answered_once: set[str] = set()
    while queue:
        path, route = queue.popleft()
        if route is None:
            route = _route_name(path)
        if route in answered_once:
            continue
        response = client.get(path)
        text = scan.response(category, f"{category} GET {path} as {persona}", response, route)
        scan.counts[f"{category} requests"] += 1
        if response.status_code == 405:
            answered_once.add(route)
        for link in page_links(text):
            if link not in seen and follow(link) and followed < MAX_FOLLOWED_LINKS:
                seen.add(link)
                followed += 1
                queue.append((link, None))
    scan.counts[f"{category} links followed as {persona}"] = followed


def _route_name(path: str) -> str:
    from django.urls import resolve

    try:
        match = resolve(urlsplit(path).path)
    except Exception:
        return "(unresolved)"
    return match.view_name or match.route


def _is_page(path: str) -> bool:
    return not path.startswith(("/admin/", "/api/v1/", "/static/"))


def _crawl_pages(scan: Scan, scenario: Scenario, personas: Personas, routes: list[Route]) -> None:
    candidates, pairs = _candidates(scenario, personas)
    seeds = [
        (path, route.name or route.text)
        for route in routes
        if _is_page(route.path({name: "1" for name in route.parameters}))
        for path in fill_route(route, candidates, pairs)
    ]
    # Query strings the pages take: searches, filters, partial lists.
    seeds += [
        ("/keys/?q=Canary", "secretsapp:keys"),
        ("/keys/manage/?list=1&q=canary", "secretsapp:manage"),
        ("/keys/picker/?q=canary", "secretsapp:picker"),
        (
            "/keys/names/?" + "&".join(f"id={key.pk}" for key in scenario.keys.values()),
            "secretsapp:names",
        ),
    ]
    seeds += [(f"/audit/?secret={key.pk}", "secretsapp:audit") for key in scenario.keys.values()]
    for persona in PAGE_PERSONAS:
        _crawl(scan, "page", persona, _page_client(personas.by_name(persona)), seeds, _is_page)
    # Signed out: the login page and the redirects to it.
    _crawl(scan, "page", "anonymous", Client(), seeds, lambda path: False)


def _crawl_admin(scan: Scan, scenario: Scenario, personas: Personas, routes: list[Route]) -> None:
    candidates, pairs = _candidates(scenario, personas)
    seeds = [
        (path, route.name or route.text)
        for route in routes
        if route.text.startswith("admin/")
        # Logging out would end the crawl's own session.
        and route.name != "admin:logout"
        for path in fill_route(route, candidates, pairs, limit=2_000)
    ]

    def follow(path: str) -> bool:
        # Links inside admin, without the sorting and filter variants of the lists.
        return (
            path.startswith("/admin/") and "?" not in path and not path.startswith("/admin/logout/")
        )

    for persona, user in (("org admin", personas.admin), ("superuser", scenario.superuser)):
        _crawl(scan, "admin", persona, _page_client(user), seeds, follow)


def _crawl_api(scan: Scan, scenario: Scenario, personas: Personas, routes: list[Route]) -> None:
    """GET every route under api/ (every page of every list), and DRF's OPTIONS metadata
    of each /api/v1/ route, as each API persona. A route that refuses GET (405: execute,
    runs, token) is requested once per persona."""
    candidates, pairs = _candidates(scenario, personas)
    api_routes = [route for route in routes if route.text.startswith("api/")]
    for persona in API_PERSONAS:
        client: APIClient = api_client_for(personas.by_name(persona))
        for route in api_routes:
            for number, path in enumerate(fill_route(route, candidates, pairs)):
                paths = [path]
                if route.name and route.name.endswith("-list"):
                    paths.append(f"{path}?page_size=200")
                if route.name == "schema":
                    paths.append(f"{path}?format=json")
                refused = False
                for url in paths:
                    while url:
                        response = client.get(url)
                        scan.response("api", f"api GET {url} as {persona}", response, route.name)
                        scan.counts["api requests"] += 1
                        refused = response.status_code == 405
                        url = _next_page(response)
                if number == 0 and route.text.startswith("api/v1/"):
                    # DRF's metadata of the endpoint (fields, choices): once per route.
                    response = client.options(path)
                    scan.response("api", f"api OPTIONS {path} as {persona}", response)
                    scan.counts["api requests"] += 1
                if refused:
                    break


def _next_page(response: HttpResponseBase) -> str | None:
    """The path of a paginated list's next page, if any."""
    if response.status_code != 200 or not response["Content-Type"].startswith("application/json"):
        return None
    body = response.json()
    next_url = body.get("next") if isinstance(body, dict) else None
    return urlsplit(next_url)._replace(scheme="", netloc="").geturl() if next_url else None


# --- Stored data, logs, the raw database -------------------------------------------------


def _scan_rows(scan: Scan, category: str, label: str, rows: Iterable[dict[str, Any]]) -> None:
    for number, row in enumerate(rows):
        for column, cell in row.items():
            scan.scanner.scan(category, f"{label} row {number} field {column}", as_text(cell))


def _scan_stored(scan: Scan) -> None:
    _scan_rows(scan, "stored rows", "Run", Run.objects.values())
    _scan_rows(scan, "stored rows", "RunStep", RunStep.objects.values())
    _scan_rows(scan, "stored rows", "AuditEvent", AuditEvent.objects.values())
    _scan_rows(scan, "stored rows", "admin LogEntry", LogEntry.objects.values())
    for entry in LogEntry.objects.all():
        scan.scanner.scan(
            "stored rows", f"admin LogEntry {entry.pk} message", entry.get_change_message()
        )
    for session in Session.objects.all():
        scan.scanner.scan(
            "sessions",
            f"session {session.session_key[:8]}… decoded",
            as_text(session.get_decoded()),
        )
        scan.counts["sessions"] += 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key, value FROM django_cache")
        for cache_key, raw in cursor.fetchall():
            try:
                # Django's database cache: base64 of a pickle, written by this test run.
                decoded = repr(pickle.loads(base64.b64decode(raw)))
            except (binascii.Error, pickle.UnpicklingError, EOFError):
                decoded = raw
            scan.scanner.scan("cache", f"cache entry {cache_key} decoded", decoded)
            scan.counts["cache entries"] += 1


def _scan_database(scan: Scan) -> set[str]:
    tables = set()
    for table, column, row_number, cell in dump_database(connection, skip=[ENCRYPTED_COLUMN]):
        tables.add(table)
        scan.scanner.scan(
            "database cells", f"database {table}.{column} row {row_number}", as_text(cell)
        )
    scan.counts["database tables"] = len(connection.introspection.table_names())
    return tables


def _scan_logs(scan: Scan, records: list[logging.LogRecord], captured: Any) -> None:
    standard = set(vars(logging.makeLogRecord({})))
    for record in records:
        where = f"log record {record.name} {record.levelname}"
        parts = [record.getMessage()]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
        # Extras (django.request's request, …) reach handlers such as error reporters.
        parts += [
            f"{name}={value!r}" for name, value in vars(record).items() if name not in standard
        ]
        scan.scanner.scan("log records", where, "\n".join(parts))
    scan.scanner.scan("stdout/stderr", "captured stdout", captured.out)
    scan.scanner.scan("stdout/stderr", "captured stderr", captured.err)
    scan.counts["log records"] = len(records)
    scan.counts["stdout/stderr lines"] = len((captured.out + captured.err).splitlines())


def _capture_every_logger(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> list[logging.Logger]:
    """DEBUG for every logger, and caplog's handler on those that do not propagate to the
    root (the project's "django" logger), so no record escapes the scan."""
    caplog.set_level(logging.DEBUG)
    added = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        caplog.set_level(logging.DEBUG, logger=name)
        if logger.disabled:
            monkeypatch.setattr(logger, "disabled", False)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
            added.append(logger)
    return added


@contextmanager
def _sql_logged() -> Iterator[None]:
    connection.force_debug_cursor = True
    try:
        yield
    finally:
        connection.force_debug_cursor = False


# --- The test ----------------------------------------------------------------------------


def test_canary_values_appear_only_in_the_requests_they_were_meant_for(
    personas: Personas,
    echo_server: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handlers_added_to = _capture_every_logger(caplog, monkeypatch)
    canaries = _new_canaries(echo_server.url)
    usernames = [BASIC_AUTH_USER, *User.objects.values_list("username", flat=True)]
    scanner = LeakScanner(list(canaries.values()), usernames)
    scan = Scan(scanner)
    try:
        # Every SQL statement and its parameters logged, as with DEBUG on, while values
        # are written and used; the crawl that follows only reads.
        with _sql_logged():
            scenario = _run_scenario(personas, echo_server, scan, canaries)

        # The one place the values must be: the target got each value that was used.
        received = _received_texts(echo_server.requests, echo_server.url)
        for label in scenario.used:
            assert any(canaries[label].value in text for text in received), (
                f"the echo server never received the {label} value"
            )
        for label in scenario.never_sent:
            assert not any(canaries[label].value in text for text in received), label
        assert RunStep.objects.filter(output__isnull=False).exists()

        routes = discover_routes()
        _crawl_pages(scan, scenario, personas, routes)
        _crawl_admin(scan, scenario, personas, routes)
        _crawl_api(scan, scenario, personas, routes)
        _scan_stored(scan)
        tables = _scan_database(scan)
    finally:
        for logger in handlers_added_to:
            logger.removeHandler(caplog.handler)
    _scan_logs(scan, caplog.records, capfd.readouterr())

    # The encrypted column, left out of the dump: Fernet tokens, never a value.
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, value FROM secretsapp_secretkey")
        stored = cursor.fetchall()
    assert len(stored) >= len(scenario.keys)
    earlier_hits = len(scanner.hits)
    for name, ciphertext in stored:
        assert ciphertext.startswith("gAAAAA"), f"{name}: not a Fernet token"
        scanner.scan("ciphertext", f"secretsapp_secretkey.value of {name}", ciphertext)
    assert len(scanner.hits) == earlier_hits, scanner.report()

    # The crawl reached today's routes, so discovery cannot silently find nothing.
    reached = {route for route, statuses in scan.statuses.items() if statuses[200]}
    assert reached >= EXPECTED_PAGES, f"pages never rendered: {EXPECTED_PAGES - reached}"
    assert reached >= EXPECTED_API_ROUTES, (
        f"API routes never answered: {EXPECTED_API_ROUTES - reached}"
    )
    for model in EXPECTED_ADMIN_MODELS:
        for page in ("changelist", "change", "history", "delete", "add"):
            route = f"admin:{model}_{page}"
            if (model, page) in REFUSED_ADMIN_PAGES:
                assert scan.statuses[route][403], f"{route} was never requested"
            else:
                assert route in reached, f"{route} never rendered"
    assert tables >= EXPECTED_TABLES, f"tables not dumped: {EXPECTED_TABLES - tables}"
    # The capture saw DEBUG records, those of non-propagating loggers, and httpx's request
    # lines (each with a URL that held a value while the run was in progress).
    captured_loggers = {record.name for record in caplog.records}
    assert {"django.db.backends", "django.request", "httpx"} <= captured_loggers

    # The scan's coverage, shown with -s.
    print(
        f"\ncanary scan: {len(canaries)} canaries, {scanner.form_count} forms; "
        f"{dict(scan.counts)}; texts scanned by kind {scanner.scanned}; "
        f"{scanner.characters:,} characters; routes reached {len(reached)}"
    )
    assert not scanner.hits, scanner.report()


# --- The scanner and the redaction it checks ---------------------------------------------


def test_the_scanner_finds_a_canary_in_every_form_it_looks_for() -> None:
    """A scan that cannot find a planted leak proves nothing: each form, and a value cut
    short, is found and named."""
    canary = Canary.new("planted")
    forms = leak_forms(canary.value, [BASIC_AUTH_USER])
    assert len(forms) > 50
    for form, name in forms.items():
        scanner = LeakScanner([canary], [BASIC_AUTH_USER])
        scanner.scan("test", "planted text", f"<p>before {form} after</p>")
        assert scanner.hits, f"{name} not found"
    scanner = LeakScanner([canary])
    scanner.scan("test", "cut text", "error: " + canary.value[:-4])
    assert [hit.form for hit in scanner.hits] == [
        "the unique prefix of the value (a partial or unknown encoding)"
    ]
    scanner = LeakScanner([canary])
    scanner.scan("test", "clean text", "[redacted:planted] canary- " + canary.marker[:-1])
    assert not scanner.hits


@pytest.mark.parametrize(
    "leak",
    [
        # A target echoing a header: http.server reads its UTF-8 bytes as ISO-8859-1.
        lambda value: value.encode("utf-8").decode("latin-1"),
        # print(variables) and KeyError(value) in Python; console.log(variables) in Node.
        lambda value: repr({"key": value}),
        lambda value: f"KeyError: {value!r}",
        lambda value: "{ key: `" + value.replace("\\", "\\\\") + "` }",
        # A JSON body echoed URL-encoded, and a Basic auth header echoed URL-encoded.
        lambda value: quote(json.dumps({"token": value}), safe=""),
        lambda value: quote(
            "Basic " + base64.b64encode(f"{BASIC_AUTH_USER}:{value}".encode()).decode(), safe=""
        ),
    ],
    ids=[
        "mojibake",
        "python dict",
        "python KeyError",
        "javascript inspect",
        "json in url",
        "basic auth in url",
    ],
)
def test_redaction_covers_the_forms_the_scan_found(leak) -> None:
    canary = Canary.new("found")
    redacted = Redactor([("Found", canary.value)]).redact_text(f"before {leak(canary.value)} after")
    assert "[redacted:Found]" in redacted
    assert canary.marker not in redacted


def test_redaction_covers_a_webhook_url_as_it_is_sent() -> None:
    canary = Canary.new("webhook")
    url = f"https://hooks.example.com/services/{canary.value}"
    sent = httpx.URL(url)
    redactor = Redactor([("Webhook", url)])
    for text in (str(sent), sent.raw_path.decode()):
        assert canary.marker not in redactor.redact_text(f"POST {text} HTTP/1.1")


def test_redaction_of_a_cut_text_covers_the_first_characters_of_a_value() -> None:
    canary = Canary.new("cut")
    redactor = Redactor([("Cut", canary.value)])
    for kept in (6, 20, len(canary.value) - 1):
        cut = "x" * 100 + canary.value[:kept]
        assert redactor.redact_cut_text(cut) == "x" * 100 + "[redacted:Cut]"
    assert redactor.redact_cut_text("nothing to see") == "nothing to see"


def test_log_records_made_during_a_run_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    canary = Canary.new("logged")
    caplog.set_level(logging.DEBUG)
    # Turned up on purpose: LOGGING keeps httpx at WARNING, redaction must not rely on it.
    caplog.set_level(logging.DEBUG, logger="httpx")
    with redacting_logs(Redactor([("Logged", canary.value)])):
        logging.getLogger("httpx").info("HTTP Request: GET %s", f"http://h/?k={canary.value}")
        try:
            raise ValueError(canary.value)
        except ValueError:
            logging.getLogger("workflows").exception("failed with %r", canary.value)
    scanner = LeakScanner([canary])
    scanner.scan("log", "caplog", caplog.text)
    assert not scanner.hits, scanner.report()
    assert caplog.text.count("[redacted:Logged]") >= 3
