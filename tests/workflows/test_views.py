"""Workflow pages: the builder's forms, permissions, running, and no value in any page."""

from __future__ import annotations

import pytest

from tests.conftest import TEAM_VALUE, Personas
from workflows import services
from workflows.models import Action, Run, Workflow


@pytest.fixture
def workflow(personas: Personas) -> Workflow:
    workflow = services.create_workflow(personas.member_use, name="Notify", inputs=["channel"])
    services.create_action(
        personas.member_use,
        workflow,
        name="Post",
        action_type="send_api_request",
        config={
            "method": "POST",
            "url": "http://127.0.0.1:9/hook",
            "headers": [{"name": "X-Key", "value": f"{{{{secret:{personas.team_key.pk}}}}}"}],
        },
    )
    return workflow


def _signed_in(client, user):
    client.force_login(user)
    return client


def test_builder_renders_the_reference_and_the_key_name_for_chips(
    client, personas: Personas, workflow
):
    html = (
        _signed_in(client, personas.member_nothing)
        .get(f"/workflows/{workflow.pk}/")
        .content.decode()
    )
    assert f"{{{{secret:{personas.team_key.pk}}}}}" in html
    assert '"keyNames"' in html and "Slack webhook" in html
    assert 'aria-label="Insert into Header 1 value"' in html
    assert TEAM_VALUE not in html


def test_builder_does_not_name_keys_the_viewer_may_not_use(client, personas: Personas):
    workflow = services.create_workflow(personas.member_use, name="Private")
    services.create_action(
        personas.member_use,
        workflow,
        name="Call",
        action_type="run_code",
        config={
            "language": "python",
            "code": "return 1",
            "variables": [{"name": "k", "value": f"{{{{secret:{personas.restricted_key.pk}}}}}"}],
        },
    )
    html = (
        _signed_in(client, personas.member_nothing)
        .get(f"/workflows/{workflow.pk}/")
        .content.decode()
    )
    assert "Stripe live" not in html


def test_viewer_sees_a_read_only_builder(client, personas: Personas, workflow):
    html = _signed_in(client, personas.viewer).get(f"/workflows/{workflow.pk}/").content.decode()
    assert "<fieldset disabled>" in html
    assert "plus-button" not in html
    assert "Save step" not in html
    action = workflow.actions.get()
    response = client.post(f"/workflows/{workflow.pk}/actions/{action.pk}/", {"name": "Hacked"})
    assert response.status_code == 403
    assert Action.objects.get(pk=action.pk).name == "Post"


def test_foreign_workflow_is_404(client, personas: Personas, workflow):
    client = _signed_in(client, personas.outsider)
    assert client.get(f"/workflows/{workflow.pk}/").status_code == 404
    action = workflow.actions.get()
    assert client.post(f"/workflows/{workflow.pk}/actions/{action.pk}/delete/").status_code == 404


def test_saving_a_step_from_the_form(client, personas: Personas, workflow):
    action = workflow.actions.get()
    response = _signed_in(client, personas.member_use).post(
        f"/workflows/{workflow.pk}/actions/{action.pk}/",
        {
            "name": "Post to chat",
            "method": "PUT",
            "url": "http://127.0.0.1:9/{{inputs.channel}}",
            "query-name": ["a", ""],
            "query-value": ["1", ""],
            "header-name": ["X-Key"],
            "header-value": [f"Bearer {{{{secret:{personas.team_key.pk}}}}}"],
            "body-type": "raw",
            "raw": '{"text": "hi"}',
        },
    )
    assert response.status_code == 302
    action.refresh_from_db()
    assert action.name == "Post to chat"
    assert action.config["query"] == [{"name": "a", "value": "1"}]
    assert action.config["body"] == {"type": "raw", "raw": '{"text": "hi"}'}


def test_invalid_step_is_422_with_the_error_beside_the_field(client, personas: Personas, workflow):
    action = workflow.actions.get()
    response = _signed_in(client, personas.member_use).post(
        f"/workflows/{workflow.pk}/actions/{action.pk}/",
        {
            "name": "Post",
            "method": "GET",
            "url": "http://127.0.0.1:9/",
            "header-name": ["X-Key"],
            "header-value": ["{{secret:not-a-key}}"],
            "body-type": "none",
        },
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert f'id="a{action.pk}-header-value-0-errors"' in html
    assert "is not a reference" in html
    # What was typed stays in the form; nothing was saved.
    assert "{{secret:not-a-key}}" in html
    assert Action.objects.get(pk=action.pk).config["headers"][0]["value"].startswith("{{secret:")


def test_add_move_and_remove_steps(client, personas: Personas, workflow):
    client = _signed_in(client, personas.member_use)
    client.post(f"/workflows/{workflow.pk}/actions/new/", {"type": "run_code"})
    code_step = workflow.actions.get(type="run_code")
    assert code_step.position == 2
    client.post(f"/workflows/{workflow.pk}/actions/{code_step.pk}/move/", {"direction": "up"})
    code_step.refresh_from_db()
    assert code_step.position == 1
    client.post(f"/workflows/{workflow.pk}/actions/{code_step.pk}/delete/")
    assert list(workflow.actions.values_list("name", "position")) == [("Post", 1)]


def test_running_from_the_page_shows_the_run(client, personas: Personas):
    workflow = services.create_workflow(personas.member_use, name="Echo", inputs=["word"])
    services.create_action(
        personas.member_use,
        workflow,
        name="Shout",
        action_type="run_code",
        config={
            "language": "python",
            "code": "print(variables['k'])\nreturn variables['w'].upper()",
            "variables": [
                {"name": "w", "value": "{{inputs.word}}"},
                {"name": "k", "value": f"{{{{secret:{personas.team_key.pk}}}}}"},
            ],
        },
    )
    client = _signed_in(client, personas.viewer)
    response = client.post(f"/workflows/{workflow.pk}/run/", {"input-word": "hello"})
    run = Run.objects.get()
    assert response["Location"] == f"/workflows/runs/{run.pk}/"
    html = client.get(response["Location"]).content.decode()
    assert "HELLO" in html
    assert "[redacted:Slack webhook]" in html
    assert TEAM_VALUE not in html
    history = client.get(f"/workflows/{workflow.pk}/runs/").content.decode()
    assert str(run.pk) in history


def test_an_invalid_new_workflow_is_shown_again_with_its_errors_and_nothing_is_created(
    client, personas: Personas
):
    response = _signed_in(client, personas.member_use).post(
        "/workflows/new/", {"name": "Billing", "inputs": "customer, 2fast"}
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "inputs[1]: use letters, digits and _" in html
    assert 'value="Billing"' in html and 'value="customer, 2fast"' in html
    assert 'aria-invalid="true"' in html
    assert not Workflow.objects.filter(name="Billing").exists()


def test_invalid_workflow_settings_are_shown_again_with_their_errors_and_nothing_changes(
    client, personas: Personas, workflow
):
    response = _signed_in(client, personas.member_use).post(
        f"/workflows/{workflow.pk}/settings/", {"name": "  ", "inputs": "channel"}
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "Enter a name." in html
    assert 'id="workflow-name-errors"' in html
    workflow.refresh_from_db()
    assert workflow.name == "Notify"


def test_valid_workflow_settings_are_saved(client, personas: Personas, workflow):
    response = _signed_in(client, personas.member_use).post(
        f"/workflows/{workflow.pk}/settings/", {"name": "Notify team", "inputs": "channel, text"}
    )
    assert response.status_code == 302
    workflow.refresh_from_db()
    assert (workflow.name, workflow.inputs) == ("Notify team", ["channel", "text"])
