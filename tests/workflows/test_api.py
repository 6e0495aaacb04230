"""Workflows, actions, execution, runs and key usage over the API."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from django.utils import timezone

from tests.conftest import (
    PERSONA_NAMES,
    TEAM_VALUE,
    Personas,
    api_client_for,
    code_action,
    http_action,
)
from workflows import services
from workflows.models import Action, Run, RunStep, Workflow
from workflows.redaction import encoded_forms


@dataclass
class Objects:
    workflow: Workflow
    action: Action
    run: Run


@pytest.fixture
def objects(personas: Personas) -> Objects:
    workflow = services.create_workflow(personas.member_use, name="Nightly", inputs=["day"])
    action = services.create_action(
        personas.member_use,
        workflow,
        name="Compute",
        action_type="run_code",
        config=code_action("return variables['day']", day="{{inputs.day}}"),
    )
    run_id = (
        api_client_for(personas.member_use)
        .post(f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {"day": "mon"}}, format="json")
        .json()["id"]
    )
    return Objects(workflow, action, Run.objects.get(pk=run_id))


ENDPOINTS = {
    "workflows.list": ("get", lambda o: "/api/v1/workflows/", None),
    "workflows.retrieve": ("get", lambda o: f"/api/v1/workflows/{o.workflow.pk}/", None),
    "workflows.create": ("post", lambda o: "/api/v1/workflows/", {"name": "New"}),
    "workflows.update": (
        "patch",
        lambda o: f"/api/v1/workflows/{o.workflow.pk}/",
        {"name": "Renamed"},
    ),
    "workflows.delete": ("delete", lambda o: f"/api/v1/workflows/{o.workflow.pk}/", None),
    "workflows.run": (
        "post",
        lambda o: f"/api/v1/workflows/{o.workflow.pk}/runs/",
        {"inputs": {"day": "tue"}},
    ),
    "actions.list": ("get", lambda o: "/api/v1/actions/", None),
    "actions.retrieve": ("get", lambda o: f"/api/v1/actions/{o.action.pk}/", None),
    "actions.update": ("patch", lambda o: f"/api/v1/actions/{o.action.pk}/", {"name": "Renamed"}),
    "actions.delete": ("delete", lambda o: f"/api/v1/actions/{o.action.pk}/", None),
    "actions.execute": (
        "post",
        lambda o: f"/api/v1/actions/{o.action.pk}/execute/",
        {"inputs": {"day": "wed"}},
    ),
    "runs.list": ("get", lambda o: "/api/v1/runs/", None),
    "runs.retrieve": ("get", lambda o: f"/api/v1/runs/{o.run.pk}/", None),
}
#            admin member_use member_manage member_nothing viewer outsider
EXPECTED = {
    "workflows.list": (200, 200, 200, 200, 200, 200),
    "workflows.retrieve": (200, 200, 200, 200, 200, 404),
    "workflows.create": (201, 201, 201, 201, 403, 201),
    "workflows.update": (200, 200, 200, 200, 403, 404),
    "workflows.delete": (204, 204, 204, 204, 403, 404),
    "workflows.run": (200, 200, 200, 200, 200, 404),
    "actions.list": (200, 200, 200, 200, 200, 200),
    "actions.retrieve": (200, 200, 200, 200, 200, 404),
    "actions.update": (200, 200, 200, 200, 403, 404),
    "actions.delete": (204, 204, 204, 204, 403, 404),
    "actions.execute": (200, 200, 200, 200, 200, 404),
    "runs.list": (200, 200, 200, 200, 200, 200),
    "runs.retrieve": (200, 200, 200, 200, 200, 404),
}


@pytest.mark.parametrize("persona", PERSONA_NAMES)
@pytest.mark.parametrize("endpoint_name", list(EXPECTED))
def test_workflow_api_permission_matrix(
    personas: Personas, objects: Objects, endpoint_name, persona
):
    method, url, body = ENDPOINTS[endpoint_name]
    expected = EXPECTED[endpoint_name][PERSONA_NAMES.index(persona)]
    response = getattr(api_client_for(personas.by_name(persona)), method)(
        url(objects), body, format="json"
    )
    assert response.status_code == expected, response.content
    if expected >= 400:
        assert response.json()["detail"]


def test_outsider_lists_nothing_of_another_organization(personas: Personas, objects: Objects):
    client = api_client_for(personas.outsider)
    for path in ("workflows", "actions", "runs"):
        assert client.get(f"/api/v1/{path}/").json()["count"] == 0


def test_execute_returns_the_contract_shape(personas: Personas, objects: Objects):
    response = api_client_for(personas.viewer).post(
        f"/api/v1/actions/{objects.action.pk}/execute/", {"inputs": {"day": "fri"}}, format="json"
    )
    body = response.json()
    assert set(body) == {"run_id", "status", "output", "error", "duration_ms"}
    assert body["status"] == "succeeded"
    assert body["output"]["result"] == "fri"


def test_workflow_run_returns_the_run(personas: Personas, objects: Objects):
    response = api_client_for(personas.member_use).post(
        f"/api/v1/workflows/{objects.workflow.pk}/runs/", {"inputs": {"day": "sat"}}, format="json"
    )
    run = response.json()
    assert set(run) == {
        "id",
        "workflow",
        "action",
        "status",
        "triggered_by",
        "trigger",
        "inputs",
        "outputs_hidden",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "duration_ms",
        "cancelled_by",
        "steps",
    }
    assert run["steps"] == [
        {
            "position": 1,
            "action": objects.action.pk,
            "name": "Compute",
            "type": "run_code",
            "status": "succeeded",
            "output": {"result": "sat", "logs": ""},
            "error": "",
        }
    ]
    assert api_client_for(personas.admin).get(f"/api/v1/runs/{run['id']}/").json() == run


def test_saving_an_action_with_a_forbidden_key_is_400(personas: Personas, objects: Objects):
    response = api_client_for(personas.member_nothing).post(
        "/api/v1/actions/",
        {
            "workflow": objects.workflow.pk,
            "name": "Sneaky",
            "type": "run_code",
            "config": code_action(k=f"{{{{secret:{personas.restricted_key.pk}}}}}"),
        },
        format="json",
    )
    assert response.status_code == 400
    assert "not a secret key you may use" in json.dumps(response.json())


def test_malformed_reference_is_400_naming_the_field(personas: Personas, objects: Objects):
    response = api_client_for(personas.member_use).post(
        "/api/v1/actions/",
        {
            "workflow": objects.workflow.pk,
            "name": "Bad",
            "type": "send_api_request",
            "config": http_action(headers=[{"name": "X", "value": "{{secret:oops}}"}]),
        },
        format="json",
    )
    assert response.status_code == 400
    assert "config.headers[0].value" in response.json()["config"][0]


def test_type_and_workflow_cannot_change(personas: Personas, objects: Objects):
    response = api_client_for(personas.member_use).patch(
        f"/api/v1/actions/{objects.action.pk}/", {"type": "send_api_request"}, format="json"
    )
    assert response.status_code == 400


def test_actions_filter_by_workflow_and_bad_filter_is_400(personas: Personas, objects: Objects):
    client = api_client_for(personas.member_use)
    assert client.get(f"/api/v1/actions/?workflow={objects.workflow.pk}").json()["count"] == 1
    assert client.get("/api/v1/actions/?workflow=999999").json()["count"] == 0
    assert client.get("/api/v1/actions/?workflow=x").status_code == 400


def test_usage_lists_referencing_actions_for_managers(personas: Personas, objects: Objects):
    services.create_action(
        personas.admin,
        objects.workflow,
        name="Notify",
        action_type="send_api_request",
        config=http_action(
            headers=[{"name": "X", "value": f"{{{{secret:{personas.team_key.pk}}}}}"}]
        ),
    )
    url = f"/api/v1/secrets/{personas.team_key.pk}/usage/"
    assert api_client_for(personas.admin).get(url).json() == [
        {
            "workflow_id": objects.workflow.pk,
            "workflow_name": "Nightly",
            "action_id": Action.objects.get(name="Notify").pk,
            "action_name": "Notify",
            "action_position": 2,
            "fields": ["config.headers[0].value"],
        }
    ]
    assert api_client_for(personas.member_use).get(url).status_code == 403
    assert api_client_for(personas.outsider).get(url).status_code == 404


def test_short_values_get_a_warning(personas: Personas):
    response = api_client_for(personas.admin).post(
        "/api/v1/secrets/", {"name": "Pin", "value": "1234"}, format="json"
    )
    assert response.status_code == 201
    assert "shorter than 8" in response.json()["warnings"][0]
    response = api_client_for(personas.admin).post(
        "/api/v1/secrets/", {"name": "Long", "value": "long-enough-value"}, format="json"
    )
    assert response.json()["warnings"] == []


def test_execution_over_the_api_never_returns_a_value(
    personas: Personas, objects: Objects, echo_server
):
    action = services.create_action(
        personas.member_use,
        objects.workflow,
        name="Leaky target",
        action_type="send_api_request",
        config=http_action(
            f"{echo_server.url}/raw",
            headers=[
                {"name": "Authorization", "value": f"Bearer {{{{secret:{personas.team_key.pk}}}}}"}
            ],
        ),
    )
    client = api_client_for(personas.member_use)
    executed = client.post(f"/api/v1/actions/{action.pk}/execute/", {}, format="json")
    runs = client.get("/api/v1/runs/")
    assert executed.json()["status"] == "succeeded"
    assert echo_server.requests[0]["headers"]["Authorization"] == f"Bearer {TEAM_VALUE}"
    for response in (executed, runs, client.get(f"/api/v1/runs/{executed.json()['run_id']}/")):
        for form in encoded_forms(TEAM_VALUE):
            assert form not in response.content.decode()
    assert "[redacted:Slack webhook]" in executed.content.decode()


def _stored_runs(personas: Personas, workflow, count: int) -> None:
    """Runs as the executor stores them: each used both keys and echoed them back."""
    used = [str(personas.restricted_key.pk), str(personas.team_key.pk)]
    for _ in range(count):
        run = Run.objects.create(
            organization=personas.organization,
            workflow=workflow,
            status="succeeded",
            triggered_by=personas.member_use,
            secret_key_ids=used,
            started_at=timezone.now(),
            finished_at=timezone.now(),
            duration_ms=1,
        )
        RunStep.objects.create(
            run=run,
            position=1,
            name="Echo",
            type="send_api_request",
            status="succeeded",
            output={"body": " ".join(f"[redacted:{secret_id}]" for secret_id in used)},
        )


@pytest.mark.parametrize("persona", ["member_use", "member_nothing"])
def test_run_list_costs_the_same_queries_for_2_and_40_runs(
    personas: Personas, objects: Objects, django_assert_num_queries, persona
):
    client = api_client_for(personas.by_name(persona))
    for count in (2, 40):
        _stored_runs(personas, objects.workflow, count)
        # 1 the token with its user and membership, 2 the count, 3 the page of runs,
        # 4 their steps, 5 which of the keys they used the reader may Use (with names).
        with django_assert_num_queries(5):
            response = client.get("/api/v1/runs/", {"page_size": 200})
        assert response.status_code == 200
    runs = [run for run in response.json()["results"] if run["steps"][0]["name"] == "Echo"]
    assert len(runs) == 42
    body = runs[0]["steps"][0]["output"]
    if persona == "member_use":
        assert body == {"body": "[redacted:Stripe live] [redacted:Slack webhook]"}
    else:
        assert body is None and all(run["outputs_hidden"] for run in runs)
