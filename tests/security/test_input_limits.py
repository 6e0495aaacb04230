"""Oversized, malformed and hostile input is refused cleanly and stores nothing.

Through the real API (token auth, as the workflow runner calls it) and the pages: every
refusal is a 4xx — JSON with a ``detail`` (and field errors) from the API, the form again
(422) or Django's 400 from a page — never a 500, and nothing was written: no key, group,
member, workflow, action, run or audit event, and no change to an existing one.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from secretsapp.api.parsers import MAX_JSON_DEPTH
from secretsapp.models import (
    NAME_MAX_LENGTH,
    VALUE_MAX_LENGTH,
    AuditEvent,
    Membership,
    OrganizationGroup,
    SecretKey,
)
from tests.conftest import Personas, api_client_for
from tests.factories import OrganizationGroupFactory
from workflows import services as workflow_services
from workflows.configs import MAX_CODE, MAX_RAW_BODY, MAX_ROW_VALUE, MAX_ROWS, MAX_URL
from workflows.execution import MAX_INPUTS_SIZE, MAX_OUTPUT_DEPTH
from workflows.models import Action, Run, RunStep, Workflow

DEEP = 100_000  # levels of nesting: far past Python's recursion limit
MEGABYTE = 1024 * 1024


@dataclass
class Targets:
    personas: Personas
    workflow: Workflow
    action: Action
    group: OrganizationGroup

    def path(self, template: str) -> str:
        return template.format(
            workflow=self.workflow.pk,
            action=self.action.pk,
            group=self.group.pk,
            secret=self.personas.team_key.pk,
            member=self.personas.viewer.pk,
        )


# Every endpoint that writes, with the method that writes.
WRITE_ENDPOINTS = [
    ("post", "/api/v1/auth/token/"),
    ("post", "/api/v1/members/"),
    ("patch", "/api/v1/members/{member}/"),
    ("post", "/api/v1/groups/"),
    ("patch", "/api/v1/groups/{group}/"),
    ("post", "/api/v1/secrets/"),
    ("patch", "/api/v1/secrets/{secret}/"),
    ("post", "/api/v1/workflows/"),
    ("patch", "/api/v1/workflows/{workflow}/"),
    ("post", "/api/v1/workflows/{workflow}/runs/"),
    ("post", "/api/v1/actions/"),
    ("patch", "/api/v1/actions/{action}/"),
    ("post", "/api/v1/actions/{action}/execute/"),
]
ENDPOINT_IDS = [f"{method.upper()} {path}" for method, path in WRITE_ENDPOINTS]


@pytest.fixture
def targets(personas: Personas) -> Targets:
    workflow = workflow_services.create_workflow(personas.admin, name="Charge", inputs=["customer"])
    action = workflow_services.create_action(
        personas.admin,
        workflow,
        name="Call",
        action_type="send_api_request",
        config={"method": "GET", "url": "http://127.0.0.1:9/"},
    )
    group = OrganizationGroupFactory(organization=personas.organization, name="Ops")
    return Targets(personas=personas, workflow=workflow, action=action, group=group)


def _state() -> dict[str, list]:
    """Everything a refused request must leave as it was."""
    return {
        "secret_keys": sorted(
            map(str, SecretKey.objects.values_list("pk", "name", "access", "version", "updated_at"))
        ),
        "groups": sorted(OrganizationGroup.objects.values_list("pk", "name")),
        "group_members": sorted(
            get_user_model().groups.through.objects.values_list("user_id", "group_id")
        ),
        "members": sorted(Membership.objects.values_list("user_id", "role")),
        "users": sorted(get_user_model().objects.values_list("pk", "username", "password")),
        "workflows": sorted(map(str, Workflow.objects.values_list("pk", "name", "inputs"))),
        "actions": sorted(
            json.dumps([pk, name, position, config])
            for pk, name, position, config in Action.objects.values_list(
                "pk", "name", "position", "config"
            )
        ),
        "runs": [Run.objects.count(), RunStep.objects.count()],
        "audit_events": [AuditEvent.objects.count()],
    }


@pytest.fixture
def unchanged(targets):
    """Asserts, after the test, that nothing was stored or changed."""
    before = _state()
    yield
    assert _state() == before


def _refused(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"]
    return body


def _nested(depth: int, innermost: object = 1) -> str:
    return "[" * depth + json.dumps(innermost) + "]" * depth


def _send(client, method: str, path: str, body: bytes | str):
    return client.generic(method.upper(), path, data=body, content_type="application/json")


# --- Field limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/api/v1/secrets/", {"name": "n" * (NAME_MAX_LENGTH + 1), "value": "v" * 20}),
        ("patch", "/api/v1/secrets/{secret}/", {"name": "n" * (NAME_MAX_LENGTH + 1)}),
        ("post", "/api/v1/groups/", {"name": "n" * (NAME_MAX_LENGTH + 1)}),
        ("patch", "/api/v1/groups/{group}/", {"name": "n" * (NAME_MAX_LENGTH + 1)}),
        ("post", "/api/v1/workflows/", {"name": "n" * (NAME_MAX_LENGTH + 1)}),
        ("patch", "/api/v1/workflows/{workflow}/", {"name": "n" * (NAME_MAX_LENGTH + 1)}),
        ("patch", "/api/v1/actions/{action}/", {"name": "n" * (NAME_MAX_LENGTH + 1)}),
    ],
)
def test_a_name_over_100_characters_is_a_field_error(targets, unchanged, method, path, payload):
    client = api_client_for(targets.personas.admin)
    response = getattr(client, method)(targets.path(path), payload, format="json")
    assert "100" in " ".join(_refused(response)["name"])


@pytest.mark.parametrize(
    ("method", "path"), [("post", "/api/v1/secrets/"), ("patch", "/api/v1/secrets/{secret}/")]
)
def test_a_value_over_65536_characters_is_a_field_error(targets, unchanged, method, path):
    payload = {"name": "Big", "value": "v" * (VALUE_MAX_LENGTH + 1)}
    client = api_client_for(targets.personas.admin)
    response = getattr(client, method)(targets.path(path), payload, format="json")
    assert "65536" in " ".join(_refused(response)["value"])


def test_a_value_of_exactly_65536_characters_is_accepted(targets):
    response = api_client_for(targets.personas.admin).post(
        "/api/v1/secrets/", {"name": "Big", "value": "v" * VALUE_MAX_LENGTH}, format="json"
    )
    assert response.status_code == 201
    assert SecretKey.objects.defer(None).get(name="Big").value == "v" * VALUE_MAX_LENGTH


def _header_rows(count: int, value: str = "x") -> list[dict[str, str]]:
    return [{"name": f"X-Row-{number}", "value": value} for number in range(count)]


@pytest.mark.parametrize(
    ("action_type", "config", "message"),
    [
        (
            "send_api_request",
            {"url": "http://127.0.0.1:9/" + "a" * MAX_URL},
            f"config.url: must be at most {MAX_URL:,} characters.",
        ),
        (
            "send_api_request",
            {"url": "http://127.0.0.1:9/", "headers": _header_rows(1, "v" * (MAX_ROW_VALUE + 1))},
            f"config.headers[0].value: must be at most {MAX_ROW_VALUE:,} characters.",
        ),
        (
            "send_api_request",
            {"url": "http://127.0.0.1:9/", "headers": _header_rows(MAX_ROWS + 1)},
            f"config.headers: must have at most {MAX_ROWS} rows.",
        ),
        (
            "send_api_request",
            {"url": "http://127.0.0.1:9/", "headers": _header_rows(1_000)},
            f"config.headers: must have at most {MAX_ROWS} rows.",
        ),
        (
            "send_api_request",
            {"url": "http://127.0.0.1:9/", "query": _header_rows(MAX_ROWS + 1)},
            f"config.query: must have at most {MAX_ROWS} rows.",
        ),
        (
            "send_api_request",
            {
                "url": "http://127.0.0.1:9/",
                "body": {"type": "raw", "raw": json.dumps("b" * MAX_RAW_BODY)},
            },
            f"config.body.raw: must be at most {MAX_RAW_BODY:,} characters.",
        ),
        (
            "run_code",
            {"language": "python", "code": "#" * (MAX_CODE + 1)},
            f"config.code: must be at most {MAX_CODE:,} characters.",
        ),
    ],
    ids=["url", "header value", "101 header rows", "1000 header rows", "query rows", "raw", "code"],
)
def test_an_oversized_action_config_is_a_400_naming_the_field_and_the_limit(
    targets, unchanged, action_type, config, message
):
    client = api_client_for(targets.personas.admin)
    created = client.post(
        "/api/v1/actions/",
        {"workflow": targets.workflow.pk, "name": "Big", "type": action_type, "config": config},
        format="json",
    )
    assert message in _refused(created)["config"]
    if action_type == "send_api_request":
        patched = client.patch(
            targets.path("/api/v1/actions/{action}/"), {"config": config}, format="json"
        )
        assert message in _refused(patched)["config"]


def test_an_action_at_every_limit_at_once_is_accepted(targets):
    """The request size limit must not refuse a config that is within every field limit."""
    rows = [
        {"name": f"X-{number:03d}-" + "n" * 200, "value": "v" * MAX_ROW_VALUE}
        for number in range(MAX_ROWS)
    ]
    # Quotes are escaped in the request: the raw body doubles in places.
    filler = '"' * ((MAX_RAW_BODY - 20) // 2)
    raw = json.dumps({"data": filler})
    raw += " " * (MAX_RAW_BODY - len(raw))
    config = {
        "method": "POST",
        "url": "http://127.0.0.1:9/" + "u" * (MAX_URL - 20),
        "query": rows,
        "headers": rows,
        "body": {"type": "raw", "raw": raw},
    }
    body = json.dumps(
        {
            "workflow": targets.workflow.pk,
            "name": "Largest",
            "type": "send_api_request",
            "config": config,
        }
    )
    assert len(body.encode()) > 2_621_440  # more than Django's default request limit

    response = _send(api_client_for(targets.personas.admin), "post", "/api/v1/actions/", body)

    assert response.status_code == 201, response.content[:500]
    assert Action.objects.get(name="Largest").config["body"]["raw"] == raw


# --- Request bodies ----------------------------------------------------------------------


class _UnreadableBody:
    """A request body that fails the test if anything reads it."""

    def read(self, *args) -> bytes:
        raise AssertionError("the oversized body was read")

    readline = read


@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_body_of_20_megabytes_is_refused_with_413_before_it_is_read(
    targets, unchanged, method, path
):
    response = api_client_for(targets.personas.admin).generic(
        method.upper(),
        targets.path(path),
        content_type="application/json",
        **{"wsgi.input": _UnreadableBody(), "CONTENT_LENGTH": str(20 * MEGABYTE)},
    )
    body = _refused(response, status=413)
    assert body["detail"] == (
        f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes."
    )


def test_a_real_20_megabyte_key_is_refused_with_413(targets, unchanged):
    body = json.dumps({"name": "Huge", "value": "v" * (20 * MEGABYTE)})
    response = _send(api_client_for(targets.personas.admin), "post", "/api/v1/secrets/", body)
    _refused(response, status=413)


@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS, ids=ENDPOINT_IDS)
def test_invalid_utf8_in_a_json_body_is_a_400(targets, unchanged, method, path):
    body = b'{"name": "caf\xc3", "value": "\xff\xfe-not-utf-8", "inputs": {}}'
    response = _send(api_client_for(targets.personas.admin), method, targets.path(path), body)
    assert "JSON parse error" in _refused(response)["detail"]


@pytest.mark.parametrize(("method", "path"), WRITE_ENDPOINTS, ids=ENDPOINT_IDS)
def test_json_nested_100000_levels_deep_is_a_400_not_a_recursion_error(
    targets, unchanged, method, path
):
    body = '{"name": "Deep", "value": "v", "inputs": {"customer": ' + _nested(DEEP) + "}}"
    response = _send(api_client_for(targets.personas.admin), method, targets.path(path), body)
    assert f"deeper than {MAX_JSON_DEPTH} levels" in _refused(response)["detail"]


def test_json_just_past_the_depth_limit_is_a_400_and_at_the_limit_is_parsed(targets):
    client = api_client_for(targets.personas.admin)
    path = targets.path("/api/v1/workflows/{workflow}/runs/")

    # The body object is level 1, "inputs" level 2, the list levels 3 and up.
    too_deep = json.dumps({"inputs": {"customer": json.loads(_nested(MAX_JSON_DEPTH - 1))}})
    with_inputs = _refused(_send(client, "post", path, too_deep))
    assert f"deeper than {MAX_JSON_DEPTH} levels" in with_inputs["detail"]

    at_limit = json.dumps({"inputs": {"customer": json.loads(_nested(MAX_JSON_DEPTH - 2))}})
    response = _send(client, "post", path, at_limit)
    assert response.status_code == 200, response.content[:500]


def test_a_deeply_nested_config_is_a_400(targets, unchanged):
    config = '{"url": "http://127.0.0.1:9/", "headers": ' + _nested(DEEP) + "}"
    body = (
        f'{{"workflow": {targets.workflow.pk}, "name": "Deep", "type": "send_api_request", '
        f'"config": {config}}}'
    )
    response = _send(api_client_for(targets.personas.admin), "post", "/api/v1/actions/", body)
    assert f"deeper than {MAX_JSON_DEPTH} levels" in _refused(response)["detail"]


def test_a_raw_body_nested_100000_levels_deep_is_a_field_error(targets, unchanged):
    # The raw body is a string in the request; the server parses it to check it is JSON.
    config = {"url": "http://127.0.0.1:9/", "body": {"type": "raw", "raw": _nested(DEEP)}}
    response = api_client_for(targets.personas.admin).post(
        "/api/v1/actions/",
        {
            "workflow": targets.workflow.pk,
            "name": "Deep",
            "type": "send_api_request",
            "config": config,
        },
        format="json",
    )
    assert any(
        message.startswith("config.body.raw:") and "nested too deeply" in message
        for message in _refused(response)["config"]
    )


# --- Characters that cannot be stored ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [
        ("post", "/api/v1/secrets/", {"name": "Bad\x00name", "value": "v" * 20}, "name"),
        ("post", "/api/v1/secrets/", {"name": "Bad value", "value": "before\x00after"}, "value"),
        ("patch", "/api/v1/secrets/{secret}/", {"value": "before\x00after"}, "value"),
        ("post", "/api/v1/groups/", {"name": "Bad\x00name"}, "name"),
        ("post", "/api/v1/workflows/", {"name": "Bad\x00name"}, "name"),
        ("patch", "/api/v1/actions/{action}/", {"name": "Bad\x00name"}, "name"),
        (
            "patch",
            "/api/v1/actions/{action}/",
            {"config": {"url": "http://127.0.0.1:9/", "headers": _header_rows(1, "a\x00b")}},
            "config",
        ),
        (
            "patch",
            "/api/v1/actions/{action}/",
            {"config": {"url": "http://127.0.0.1:9/\x00"}},
            "config",
        ),
        (
            "post",
            "/api/v1/workflows/{workflow}/runs/",
            {"inputs": {"customer": "a\x00b"}},
            "inputs",
        ),
        ("post", "/api/v1/actions/{action}/execute/", {"inputs": {"customer": "\x00"}}, "inputs"),
    ],
)
def test_nul_characters_are_refused_with_a_field_error(
    targets, unchanged, method, path, payload, field
):
    client = api_client_for(targets.personas.admin)
    response = getattr(client, method)(targets.path(path), payload, format="json")
    assert field in _refused(response)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/secrets/", '{"name": "Lone", "value": "half a pair: \\ud800 here"}'),
        ("post", "/api/v1/auth/token/", '{"username": "alice-admin", "password": "\\udfff"}'),
        (
            "post",
            "/api/v1/members/",
            '{"username": "u", "email": "u@example.com", '
            '"password": "Corr3ct-\\ud800-horse", "role": "member"}',
        ),
        (
            "patch",
            "/api/v1/actions/{action}/",
            '{"config": {"url": "http://127.0.0.1:9/", "headers": '
            '[{"name": "X", "value": "\\udbff"}]}}',
        ),
        ("post", "/api/v1/workflows/{workflow}/runs/", '{"inputs": {"customer": "\\ud800"}}'),
    ],
    ids=["secret value", "password", "new member password", "config", "inputs"],
)
def test_an_unpaired_surrogate_is_a_400_not_a_500(targets, unchanged, method, path, body):
    # Valid JSON escapes, but not text: no UTF-8 encoding (the database's, the cipher's,
    # the password hasher's) can hold them.
    response = _send(api_client_for(targets.personas.admin), method, targets.path(path), body)
    assert "surrogate" in _refused(response)["detail"]


# --- Runs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/workflows/{workflow}/runs/", "/api/v1/actions/{action}/execute/"]
)
def test_a_run_with_huge_inputs_is_refused_and_runs_nothing(targets, unchanged, path):
    payload = {"inputs": {"customer": "c" * (2 * MEGABYTE)}}
    response = api_client_for(targets.personas.admin).post(
        targets.path(path), payload, format="json"
    )
    assert f"{MAX_INPUTS_SIZE:,}" in " ".join(_refused(response)["inputs"])


def test_a_run_with_many_small_inputs_over_the_limit_is_refused(targets, unchanged):
    nested_width = {"customer": [{"item": number} for number in range(MAX_INPUTS_SIZE)]}
    response = api_client_for(targets.personas.admin).post(
        targets.path("/api/v1/workflows/{workflow}/runs/"), {"inputs": nested_width}, format="json"
    )
    assert "inputs" in _refused(response)


@pytest.fixture
def deep_json_server():
    """Answers every GET with a JSON array nested 600 levels deep: Python parses it, but
    everything recursive after that (redaction, storing, rendering) would run out of stack."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = _nested(600).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _execute(targets: Targets, action_type: str, config: dict) -> dict:
    action = workflow_services.create_action(
        targets.personas.admin,
        targets.workflow,
        name="Deep",
        action_type=action_type,
        config=config,
    )
    response = api_client_for(targets.personas.admin).post(
        f"/api/v1/actions/{action.pk}/execute/", {"inputs": {}}, format="json"
    )
    assert response.status_code == 200, response.content[:500]
    return response.json()


def test_a_response_nested_too_deeply_fails_the_step_instead_of_a_500(targets, deep_json_server):
    # A secret in the request, so the run has something to redact.
    headers = [{"name": "X-Key", "value": targets.personas.team_key.reference}]
    result = _execute(targets, "send_api_request", {"url": deep_json_server, "headers": headers})
    assert result["status"] == "failed"
    assert result["error"] == (
        f"The output is nested deeper than {MAX_OUTPUT_DEPTH} levels, which runs cannot keep."
    )
    assert Run.objects.get(pk=result["run_id"]).status == "failed"


@pytest.mark.parametrize(
    ("language", "depth", "error"),
    [
        ("python", 600, f"nested deeper than {MAX_OUTPUT_DEPTH} levels"),
        ("javascript", 600, f"nested deeper than {MAX_OUTPUT_DEPTH} levels"),
        # Node serialises it; Python's json cannot read it back.
        ("javascript", 2_000, "nested too deeply to be read"),
    ],
)
def test_a_code_result_nested_too_deeply_fails_the_step_instead_of_a_500(
    targets, language, depth, error
):
    code = {
        "python": f"result = 1\nfor _ in range({depth}):\n    result = [result]\nreturn result",
        "javascript": f"let r = 1; for (let i = 0; i < {depth}; i++) r = [r]; return r;",
    }[language]
    variables = [{"name": "key", "value": targets.personas.team_key.reference}]
    result = _execute(
        targets, "run_code", {"language": language, "code": code, "variables": variables}
    )
    assert result["status"] == "failed"
    assert error in result["error"]


# --- Pages -------------------------------------------------------------------------------


def _page_client(client, user):
    client.force_login(user)
    return client


def test_page_refuses_an_oversized_name_and_value(client, targets, unchanged):
    client = _page_client(client, targets.personas.admin)
    long_name = client.post(
        "/keys/new/", {"name": "n" * (NAME_MAX_LENGTH + 1), "value": "v" * 20, "access": "team"}
    )
    long_value = client.post(
        "/keys/new/", {"name": "Big", "value": "v" * (VALUE_MAX_LENGTH + 1), "access": "team"}
    )
    nul_value = client.post(
        "/keys/new/", {"name": "Nul", "value": "before\x00after", "access": "team"}
    )
    assert long_name.status_code == long_value.status_code == nul_value.status_code == 422
    assert "100 characters" in long_name.content.decode()
    assert "65,536 characters" in long_value.content.decode()
    assert "NUL" in nul_value.content.decode()


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"url": "http://127.0.0.1:9/" + "a" * MAX_URL}, f"at most {MAX_URL:,} characters"),
        (
            {"header-name": ["X-A"], "header-value": ["v" * (MAX_ROW_VALUE + 1)]},
            f"at most {MAX_ROW_VALUE:,} characters",
        ),
        (
            {
                "header-name": [f"X-{number}" for number in range(MAX_ROWS + 1)],
                "header-value": ["v"] * (MAX_ROWS + 1),
            },
            f"at most {MAX_ROWS} rows",
        ),
        ({"body-type": "raw", "raw": _nested(DEEP)}, "nested too deeply"),
        ({"header-name": ["X-A"], "header-value": ["a\x00b"]}, "NUL"),
    ],
    ids=["url", "header value", "101 header rows", "deep raw body", "nul"],
)
def test_page_refuses_an_oversized_action_config_with_422(
    client, targets, unchanged, form, message
):
    page = _page_client(client, targets.personas.admin)
    response = page.post(
        f"/workflows/{targets.workflow.pk}/actions/{targets.action.pk}/",
        {"name": "Call", "method": "GET", "url": "http://127.0.0.1:9/", **form},
    )
    assert response.status_code == 422
    assert message in response.content.decode()


def test_page_refuses_a_thousand_header_rows_as_too_many_fields(client, targets, unchanged):
    page = _page_client(client, targets.personas.admin)
    response = page.post(
        f"/workflows/{targets.workflow.pk}/actions/{targets.action.pk}/",
        {
            "name": "Call",
            "url": "http://127.0.0.1:9/",
            "header-name": [f"X-{number}" for number in range(1_000)],
            "header-value": ["v"] * 1_000,
        },
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/keys/new/",
        "/keys/{secret}/value/",
        "/workflows/new/",
        "/workflows/{workflow}/actions/{action}/",
        "/workflows/{workflow}/run/",
    ],
)
def test_page_refuses_a_body_of_20_megabytes(client, targets, unchanged, path):
    page = _page_client(client, targets.personas.admin)
    response = page.post(
        targets.path(path),
        data=b"value=" + b"v" * (20 * MEGABYTE),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 400


def test_page_run_with_huge_or_nul_inputs_runs_nothing(client, targets, unchanged):
    page = _page_client(client, targets.personas.admin)
    path = f"/workflows/{targets.workflow.pk}/run/"
    huge = page.post(path, {"input-customer": "c" * (MAX_INPUTS_SIZE + 1)})
    nul = page.post(path, {"input-customer": "a\x00b"})
    # The builder again with the message (a redirect after POST), and no run.
    assert huge.status_code == nul.status_code == 302
    assert huge["Location"] == nul["Location"] == f"/workflows/{targets.workflow.pk}/"
