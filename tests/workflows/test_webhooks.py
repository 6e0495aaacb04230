"""Webhooks (issue 12): set up, rotated and removed by those who may change the workflow;
``POST /hooks/<token>/`` starts a run with the body as inputs, with the rights of the
person who set it up, checked again when the run starts.

The public endpoint is called over real HTTP (a live server), as another system would;
the management endpoints with the API client, and the page with a signed-in client.
Attacks are in tests/security/test_webhooks.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest
from django.test import Client

from secretsapp import services as secret_services
from secretsapp.api.throttles import WebhookRateThrottle
from secretsapp.models import AuditAction, AuditEvent
from secretsapp.templatetags.secretkeys import describe_changes
from tests.conftest import RESTRICTED_VALUE, Personas, api_client_for, http_action
from workflows import services, webhooks
from workflows.api.views import UNKNOWN_HOOK
from workflows.models import Run, RunTrigger, Webhook, Workflow

KEY_NAME = "Stripe live"  # personas.restricted_key


@pytest.fixture
def workflow(personas: Personas, echo_server) -> Workflow:
    """bob's (member_use) workflow: one step sends the Restricted key and the customer
    input to the echo server."""
    created = services.create_workflow(personas.member_use, name="Charge", inputs=["customer"])
    services.create_action(
        personas.member_use,
        created,
        name="Post charge",
        action_type="send_api_request",
        config=http_action(
            f"{echo_server.url}/echo/{{{{inputs.customer}}}}",
            method="POST",
            headers=[{"name": "X-Key", "value": f"{{{{secret:{personas.restricted_key.pk}}}}}"}],
        ),
    )
    return created


@pytest.fixture
def plain_workflow(personas: Personas, echo_server) -> Workflow:
    """A workflow that references no key (anyone who may edit may change it)."""
    created = services.create_workflow(personas.member_nothing, name="Ping", inputs=["note"])
    services.create_action(
        personas.member_nothing,
        created,
        name="Ping",
        action_type="send_api_request",
        config=http_action(f"{echo_server.url}/echo"),
    )
    return created


def _url(workflow: Workflow) -> str:
    return f"/api/v1/workflows/{workflow.pk}/webhook/"


def _create(user, workflow: Workflow) -> dict:
    response = api_client_for(user).post(_url(workflow))
    assert response.status_code == 201, response.content
    return response.json()


def _hook_client(live_server) -> httpx.Client:
    # No keep-alive: a connection left open would outlive the test in a server thread.
    return httpx.Client(base_url=live_server.url, headers={"Connection": "close"}, timeout=30)


@pytest.fixture
def hooks(live_server) -> Iterator[httpx.Client]:
    with _hook_client(live_server) as client:
        yield client


# --- Setting it up (API) -------------------------------------------------------------------


def test_creating_a_webhook_answers_its_url_with_the_token_once(
    personas: Personas, workflow: Workflow
):
    client = api_client_for(personas.member_use)
    response = client.post(_url(workflow))
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    created = response.json()
    assert set(created) == {"url", "token", "created_by", "created_at"}
    assert created["url"] == f"http://testserver/hooks/{created['token']}/"
    assert len(created["token"]) == 43
    assert created["created_by"] == personas.member_use.pk

    shown = client.get(_url(workflow))
    assert shown.status_code == 200
    assert created["token"] not in shown.content.decode()
    assert shown.json() == {
        "url_prefix": f"http://testserver/hooks/{created['token'][:8]}…",
        "created_by": personas.member_use.pk,
        "created_at": created["created_at"],
        "last_used_at": None,
    }


def test_the_token_is_stored_only_as_its_hash(personas: Personas, workflow: Workflow):
    token = _create(personas.member_use, workflow)["token"]
    row = Webhook.objects.filter(workflow=workflow).values().get()
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert row["token_prefix"] == token[:8]
    assert not any(token in str(value) for value in row.values())


def test_a_workflow_without_a_webhook_answers_404(personas: Personas, workflow: Workflow):
    client = api_client_for(personas.member_use)
    for response in (client.get(_url(workflow)), client.delete(_url(workflow))):
        assert response.status_code == 404
        assert response.json() == {"detail": "This workflow has no webhook."}


def test_rotating_replaces_the_token_and_the_old_one_is_a_404(
    personas: Personas, workflow: Workflow, hooks: httpx.Client
):
    old = _create(personas.member_use, workflow)["token"]
    new = _create(personas.admin, workflow)["token"]
    assert new != old
    assert Webhook.objects.filter(workflow=workflow).count() == 1

    refused = hooks.post(f"/hooks/{old}/", json={"customer": "c-1"})
    assert refused.status_code == 404
    accepted = hooks.post(f"/hooks/{new}/", json={"customer": "c-1"})
    assert accepted.status_code == 202, accepted.text


def test_rotating_makes_the_rotator_the_person_the_runs_act_for(
    personas: Personas, workflow: Workflow
):
    _create(personas.member_use, workflow)
    Webhook.objects.filter(workflow=workflow).update(last_used_at="2026-01-01T00:00:00Z")
    created = _create(personas.member_manage, workflow)

    webhook = Webhook.objects.get(workflow=workflow)
    assert webhook.created_by == personas.member_manage
    assert created["created_by"] == personas.member_manage.pk
    assert webhook.last_used_at is None  # the new token has not been used
    run = webhooks.trigger(webhook, {"customer": "c-2"})
    assert run.triggered_by == personas.member_manage


def test_removing_a_webhook_makes_its_token_a_404(
    personas: Personas, workflow: Workflow, hooks: httpx.Client
):
    token = _create(personas.member_use, workflow)["token"]
    client = api_client_for(personas.member_use)

    assert client.delete(_url(workflow)).status_code == 204
    assert not Webhook.objects.filter(workflow=workflow).exists()
    assert client.get(_url(workflow)).status_code == 404
    assert hooks.post(f"/hooks/{token}/", json={}).status_code == 404


def test_runs_of_a_removed_webhook_stay_and_still_say_webhook(
    personas: Personas, workflow: Workflow
):
    _create(personas.member_use, workflow)
    run = webhooks.trigger(Webhook.objects.get(workflow=workflow), {"customer": "c-3"})
    webhooks.remove(personas.member_use, workflow)
    run.refresh_from_db()
    assert run.trigger == RunTrigger.WEBHOOK and run.webhook is None
    assert run.triggered_by == personas.member_use


def test_setting_up_rotating_and_removing_are_audited_with_the_workflow_not_the_token(
    personas: Personas, workflow: Workflow
):
    first = _create(personas.member_use, workflow)["token"]
    second = _create(personas.admin, workflow)["token"]
    api_client_for(personas.member_manage).delete(_url(workflow))

    events = list(
        AuditEvent.objects.filter(action__startswith="webhook_").order_by("created_at", "pk")
    )
    assert [(event.action, event.actor) for event in events] == [
        (AuditAction.WEBHOOK_CREATED, personas.member_use),
        (AuditAction.WEBHOOK_ROTATED, personas.admin),
        (AuditAction.WEBHOOK_REMOVED, personas.member_manage),
    ]
    for event in events:
        assert event.secret_key_id is None
        assert event.organization == personas.organization
        assert event.changes == {"workflow_id": workflow.pk, "workflow_name": "Charge"}
    every_event = str(list(AuditEvent.objects.values()))
    assert first not in every_event and second not in every_event


def test_a_viewer_reads_the_webhook_but_cannot_set_it_up_rotate_or_remove_it(
    personas: Personas, workflow: Workflow
):
    _create(personas.member_use, workflow)
    viewer = api_client_for(personas.viewer)
    assert viewer.get(_url(workflow)).status_code == 200
    for response in (viewer.post(_url(workflow)), viewer.delete(_url(workflow))):
        assert response.status_code == 403
        assert response.json()["detail"] == "Viewers can run workflows but not change them."
    assert Webhook.objects.get(workflow=workflow).created_by == personas.member_use


def test_a_member_without_use_on_the_workflows_keys_is_refused_naming_no_key(
    personas: Personas, workflow: Workflow
):
    dave = api_client_for(personas.member_nothing)
    refused = dave.post(_url(workflow))
    assert refused.status_code == 403
    assert "uses secret keys you may not use" in refused.json()["detail"]
    assert KEY_NAME not in refused.content.decode()
    assert not Webhook.objects.filter(workflow=workflow).exists()

    _create(personas.member_use, workflow)
    assert dave.delete(_url(workflow)).status_code == 403
    assert Webhook.objects.filter(workflow=workflow).exists()


def test_a_member_may_set_up_the_webhook_of_a_workflow_without_keys(
    personas: Personas, plain_workflow: Workflow
):
    created = _create(personas.member_use, plain_workflow)
    assert created["created_by"] == personas.member_use.pk


def test_another_organizations_workflow_is_a_404(personas: Personas, workflow: Workflow):
    _create(personas.member_use, workflow)
    outsider = api_client_for(personas.outsider)
    for method in ("get", "post", "delete"):
        assert getattr(outsider, method)(_url(workflow)).status_code == 404
    assert Webhook.objects.get(workflow=workflow).created_by == personas.member_use


# --- Calling it (real HTTP) ----------------------------------------------------------------


def test_a_call_starts_a_run_with_the_body_as_inputs_and_the_creators_rights(
    live_server, personas: Personas, workflow: Workflow, hooks: httpx.Client, echo_server
):
    token = _create(personas.member_use, workflow)["token"]
    response = hooks.post(f"/hooks/{token}/", json={"customer": "cus_42"})

    assert response.status_code == 202, response.text
    body = response.json()
    run = Run.objects.get(pk=body["id"])
    assert response.headers["Location"] == f"{live_server.url}/api/v1/runs/{run.pk}/"
    assert run.trigger == RunTrigger.WEBHOOK and body["trigger"] == "webhook"
    assert run.triggered_by == personas.member_use
    assert body["triggered_by"] == personas.member_use.pk
    assert run.webhook == Webhook.objects.get(workflow=workflow)
    assert run.inputs == {"customer": "cus_42"} and body["inputs"] == {"customer": "cus_42"}
    assert run.status == "succeeded"  # eager mode: it ran inside the call
    (sent,) = echo_server.requests
    assert sent["path"] == "/echo/cus_42" and sent["headers"]["X-Key"] == RESTRICTED_VALUE
    assert Webhook.objects.get(workflow=workflow).last_used_at == run.created_at


def test_the_runs_answer_shows_what_the_creator_may_see_with_the_key_redacted(
    personas: Personas, workflow: Workflow, hooks: httpx.Client
):
    token = _create(personas.member_use, workflow)["token"]
    body = hooks.post(f"/hooks/{token}/", json={"customer": "cus_7"}).json()

    # bob may Use the key the run used: its outputs are his to read, the value redacted.
    assert body["outputs_hidden"] is False
    (step,) = body["steps"]
    assert step["status"] == "succeeded"
    assert step["output"]["body"]["headers"]["X-Key"] == f"[redacted:{KEY_NAME}]"
    assert RESTRICTED_VALUE not in str(body)


def test_an_empty_body_is_a_run_without_inputs(
    personas: Personas, plain_workflow: Workflow, hooks: httpx.Client
):
    token = _create(personas.member_use, plain_workflow)["token"]
    response = hooks.post(f"/hooks/{token}/")
    assert response.status_code == 202, response.text
    assert response.json()["inputs"] == {}


@pytest.mark.parametrize(
    "token",
    [
        "never-existed-Yd2ZC9yqA1kQm0VvXbHc7t3sLpR4uN8eWfJgKi5oT6",  # 54 characters
        "Yd2ZC9yqA1kQm0VvXbHc7t3sLpR4uN8eWfJgKi5oT6a",  # a token's shape, unknown
        "short",
        "a/b",
        "%2e%2e",
    ],
)
def test_an_unknown_token_is_a_404_and_queues_nothing(
    personas: Personas, hooks: httpx.Client, token: str
):
    response = hooks.post(f"/hooks/{token}/", json={})
    assert response.status_code == 404
    assert response.json() == {"detail": UNKNOWN_HOOK}
    assert not Run.objects.exists()


def test_removed_and_rotated_tokens_get_the_same_answer_as_unknown_ones(
    personas: Personas, workflow: Workflow, plain_workflow: Workflow, hooks: httpx.Client
):
    rotated = _create(personas.member_use, workflow)["token"]
    _create(personas.member_use, workflow)
    removed = _create(personas.member_use, plain_workflow)["token"]
    api_client_for(personas.member_use).delete(_url(plain_workflow))

    for token in (rotated, removed, "x" * 43):
        response = hooks.post(f"/hooks/{token}/", json={})
        assert (response.status_code, response.json()) == (404, {"detail": UNKNOWN_HOOK})


@pytest.mark.parametrize("body", ["[1, 2]", '"customer"', "42", "null", "true"])
def test_a_body_that_is_not_a_json_object_is_a_400_and_queues_nothing(
    personas: Personas, workflow: Workflow, hooks: httpx.Client, body: str
):
    token = _create(personas.member_use, workflow)["token"]
    response = hooks.post(
        f"/hooks/{token}/", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["inputs"] == [webhooks.NOT_AN_OBJECT]
    assert not Run.objects.exists()
    assert Webhook.objects.get(workflow=workflow).last_used_at is None


def test_unknown_inputs_are_a_400_with_field_errors_and_queue_nothing(
    personas: Personas, workflow: Workflow, hooks: httpx.Client, echo_server
):
    token = _create(personas.member_use, workflow)["token"]
    response = hooks.post(f"/hooks/{token}/", json={"customer": "c", "amount": 5})
    assert response.status_code == 400
    assert response.json()["inputs"] == ["Unknown input(s): amount. This workflow takes: customer."]
    assert not Run.objects.exists() and echo_server.requests == []


def test_only_json_is_accepted(personas: Personas, workflow: Workflow, hooks: httpx.Client):
    token = _create(personas.member_use, workflow)["token"]
    form = hooks.post(f"/hooks/{token}/", data={"customer": "c"})
    assert form.status_code == 415
    broken = hooks.post(
        f"/hooks/{token}/", content="{not json", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    assert not Run.objects.exists()


def test_only_post_is_answered(personas: Personas, workflow: Workflow, hooks: httpx.Client):
    token = _create(personas.member_use, workflow)["token"]
    for method in ("GET", "PUT", "DELETE"):
        assert hooks.request(method, f"/hooks/{token}/").status_code == 405
    assert not Run.objects.exists()


def test_calls_are_throttled_per_webhook(
    personas: Personas,
    workflow: Workflow,
    plain_workflow: Workflow,
    hooks: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(WebhookRateThrottle, "THROTTLE_RATES", {"webhooks": "2/min"})
    token = _create(personas.member_use, workflow)["token"]
    other = _create(personas.member_use, plain_workflow)["token"]

    answers = [hooks.post(f"/hooks/{token}/", json={}).status_code for _ in range(3)]
    assert answers == [202, 202, 429]
    throttled = hooks.post(f"/hooks/{token}/", json={})
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert "throttled" in throttled.json()["detail"]
    assert Run.objects.filter(workflow=workflow).count() == 2
    # Another webhook has its own count.
    assert hooks.post(f"/hooks/{other}/", json={}).status_code == 202


def test_the_default_rate_is_sixty_calls_a_minute():
    from django.conf import settings

    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["webhooks"] == "60/min"


# --- The creator's rights, checked when the run starts -------------------------------------


def test_a_creator_who_lost_use_gets_a_failed_step_that_says_may_not_use(
    personas: Personas, workflow: Workflow, hooks: httpx.Client, echo_server
):
    token = _create(personas.member_use, workflow)["token"]
    secret_services.update_secret_key(
        personas.admin,
        personas.restricted_key,
        grants=[
            {"principal_type": "user", "principal_id": personas.member_manage.pk, "level": "manage"}
        ],
    )

    response = hooks.post(f"/hooks/{token}/", json={"customer": "c-9"})
    assert response.status_code == 202  # queued: the rights are the worker's question
    run = Run.objects.get(pk=response.json()["id"])
    assert run.status == "failed"
    (step,) = run.steps.all()
    assert step.status == "failed"
    assert step.error == (
        f"config.headers[0].value: {{{{secret:{personas.restricted_key.pk}}}}} "
        "is a secret key you may not use."
    )
    assert echo_server.requests == []


def test_a_creator_no_longer_in_the_organization_is_a_403_at_the_endpoint(
    personas: Personas, plain_workflow: Workflow, hooks: httpx.Client
):
    token = _create(personas.member_use, plain_workflow)["token"]
    membership = personas.member_use.membership
    secret_services.remove_member(personas.admin, membership)

    response = hooks.post(f"/hooks/{token}/", json={"note": "hi"})
    assert response.status_code == 403
    assert "ask someone who may edit the workflow to set the webhook up again" in (
        response.json()["detail"].lower()
    )
    assert not Run.objects.exists()

    # Set up again by someone who may: it works again, with their rights.
    token = _create(personas.member_manage, plain_workflow)["token"]
    accepted = hooks.post(f"/hooks/{token}/", json={"note": "hi"})
    assert accepted.status_code == 202
    assert accepted.json()["triggered_by"] == personas.member_manage.pk


def test_a_creator_demoted_to_viewer_still_runs_it_with_their_own_use(
    personas: Personas, workflow: Workflow
):
    # Viewers run workflows: the webhook keeps working, with the keys they may still Use.
    _create(personas.member_use, workflow)
    secret_services.change_role(personas.admin, personas.member_use.membership, "viewer")
    run = webhooks.trigger(Webhook.objects.get(workflow=workflow), {"customer": "c"})
    assert run.status == "succeeded"


# --- The page ------------------------------------------------------------------------------


def _page_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _edit(workflow: Workflow) -> str:
    return f"/workflows/{workflow.pk}/"


def _webhook_page_url(workflow: Workflow) -> str:
    return f"/workflows/{workflow.pk}/webhook/"


def test_creating_on_the_page_shows_the_url_once_and_a_reload_does_not(
    personas: Personas, workflow: Workflow
):
    client = _page_client(personas.member_use)
    before = client.get(_edit(workflow)).content.decode()
    assert "No webhook." in before and "Create webhook" in before

    response = client.post(_webhook_page_url(workflow), headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    html = response.content.decode()
    webhook = Webhook.objects.get(workflow=workflow)
    (token,) = set(re.findall(r"http://testserver/hooks/([A-Za-z0-9_-]{43})/", html))
    assert hashlib.sha256(token.encode()).hexdigest() == webhook.token_hash
    assert "it is shown only this once" in html
    assert 'data-copy="webhook-url"' in html and 'id="webhook-url"' in html
    assert html.lstrip().startswith('<section class="card" id="webhook-panel"')  # the panel

    reloaded = client.get(_edit(workflow)).content.decode()
    assert token not in reloaded
    assert f"/hooks/{token[:8]}…" in reloaded
    assert "Set up by bob-use just now" in reloaded and "Last used never" in reloaded
    assert "Rotate" in reloaded and "Remove" in reloaded


def test_rotating_without_htmx_renders_the_workflow_page_with_the_new_url(
    personas: Personas, workflow: Workflow
):
    _create(personas.member_use, workflow)
    old_hash = Webhook.objects.get(workflow=workflow).token_hash
    response = _page_client(personas.admin).post(_webhook_page_url(workflow))
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    assert "<h1>Charge</h1>" in html and "it is shown only this once" in html
    webhook = Webhook.objects.get(workflow=workflow)
    assert webhook.token_hash != old_hash and webhook.created_by == personas.admin


def test_the_page_says_when_the_webhook_was_last_used(personas: Personas, workflow: Workflow):
    _create(personas.member_use, workflow)
    webhooks.trigger(Webhook.objects.get(workflow=workflow), {"customer": "c"})
    html = _page_client(personas.viewer).get(_edit(workflow)).content.decode()
    assert "Last used just now" in html


def test_removing_on_the_page(personas: Personas, workflow: Workflow):
    _create(personas.member_use, workflow)
    client = _page_client(personas.member_use)
    response = client.post(f"/workflows/{workflow.pk}/webhook/remove/")
    assert response.status_code == 302
    assert response["Location"] == f"/workflows/{workflow.pk}/#webhook-panel"
    assert not Webhook.objects.filter(workflow=workflow).exists()
    assert "Webhook removed" in client.get(_edit(workflow)).content.decode()


def test_a_viewer_sees_the_webhook_without_buttons_and_cannot_post(
    personas: Personas, workflow: Workflow
):
    _create(personas.member_use, workflow)
    client = _page_client(personas.viewer)
    html = client.get(_edit(workflow)).content.decode()
    assert "Set up by bob-use" in html
    assert "Rotate" not in html and "webhook/remove/" not in html
    assert client.post(_webhook_page_url(workflow)).status_code == 403
    assert client.post(f"/workflows/{workflow.pk}/webhook/remove/").status_code == 403
    assert Webhook.objects.get(workflow=workflow).created_by == personas.member_use


def test_a_member_without_use_sees_no_buttons_and_is_refused(
    personas: Personas, workflow: Workflow
):
    client = _page_client(personas.member_nothing)
    html = client.get(_edit(workflow)).content.decode()
    assert "No webhook." in html and "Create webhook" not in html
    response = client.post(_webhook_page_url(workflow), headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert not Webhook.objects.filter(workflow=workflow).exists()


def test_an_outsider_gets_404_on_the_pages(personas: Personas, workflow: Workflow):
    _create(personas.member_use, workflow)
    client = _page_client(personas.outsider)
    assert client.post(_webhook_page_url(workflow)).status_code == 404
    assert client.post(f"/workflows/{workflow.pk}/webhook/remove/").status_code == 404
    assert Webhook.objects.get(workflow=workflow).created_by == personas.member_use


def test_the_page_says_when_the_person_who_set_it_up_left(
    personas: Personas, plain_workflow: Workflow
):
    _create(personas.member_use, plain_workflow)
    secret_services.remove_member(personas.admin, personas.member_use.membership)
    html = _page_client(personas.admin).get(_edit(plain_workflow)).content.decode()
    assert "bob-use is no longer a member of the organization" in html


def test_deleting_the_workflow_audits_its_webhook_as_removed(personas: Personas, plain_workflow):
    created = _create(personas.member_nothing, plain_workflow)

    deleted = api_client_for(personas.member_nothing).delete(
        f"/api/v1/workflows/{plain_workflow.pk}/"
    )

    assert deleted.status_code == 204
    assert webhooks.find(created["token"]) is None
    removed = AuditEvent.objects.get(action=AuditAction.WEBHOOK_REMOVED)
    assert removed.actor == personas.member_nothing
    assert removed.changes == {"workflow_id": plain_workflow.pk, "workflow_name": "Ping"}
    assert describe_changes(removed) == "workflow “Ping”"  # as the audit log reads it
