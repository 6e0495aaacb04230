"""The OpenAPI schema is valid, documents what the API does, and survives fuzzing."""

from __future__ import annotations

import io

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from config.wsgi import application
from tests.conftest import Personas, api_client_for

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


def test_schema_validates_with_zero_warnings(capsys):
    output = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=output)
    captured = capsys.readouterr()
    assert "openapi: 3" in output.getvalue()
    assert "Warning" not in captured.err + captured.out


def test_schema_marks_value_write_only_and_never_in_responses():
    components = schema.raw_schema["components"]["schemas"]
    assert "value" in components["SecretKeyRequest"]["properties"]
    assert "value" in components["SecretKeyRequest"]["required"]
    assert "value" not in components["SecretKey"]["properties"]
    assert "value" not in components["PatchedSecretKeyRequest"].get("required", [])


def test_every_operation_documents_its_errors():
    for path, operations in schema.raw_schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "429" in responses, (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if path.startswith("/hooks/"):  # the token in the path is the credential
                assert "403" in responses and "401" not in responses, (method, path)
            elif not path.endswith("/auth/token/"):
                assert {"401", "403"} <= set(responses), (method, path)
            if method in ("post", "put", "patch"):
                assert {"400", "413"} <= set(responses), (method, path)


def test_docs_are_served_without_a_cdn(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn." not in html and "unpkg" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


@pytest.fixture
def in_process_requests():
    """Calls through the WSGI app in this process, inside the test's transaction.

    Django's test client does the same: it stops the request signals from closing the
    database connection, which would otherwise end the transaction (on PostgreSQL)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def member_token(personas: Personas, in_process_requests) -> str:
    api_client_for(personas.member_manage)
    return personas.member_manage.auth_token.key


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_schema(case, member_token):
    # Every other check runs (no 5xx, documented status codes and bodies, schema-invalid
    # input refused). Schema-valid input may still be refused by business rules (a taken
    # name, an unknown principal, wrong credentials): that is a documented 400.
    case.call_and_validate(
        headers={"Authorization": f"Token {member_token}"},
        excluded_checks=[positive_data_acceptance],
    )
