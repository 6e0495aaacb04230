"""Attacks on webhooks (issue 12), over real HTTP against a live server.

A webhook runs its workflow with the rights of the person who set it up, so it is a door
to their keys. bob (``member_use``: Use on the Restricted key "Stripe live") built a
workflow that sends the key to his ledger (the echo server) and set up its webhook. dave
(``member_nothing``: no grant) tries to take the door over, mallory (another
organization's admin) to reach it at all, and anyone who learns a stale token to use it.
The token itself must be nowhere but in the one answer that created it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from secretsapp import services as secret_services
from secretsapp.api.throttles import WebhookRateThrottle
from secretsapp.models import AuditAction, AuditEvent
from tests.conftest import RESTRICTED_VALUE, Personas, http_action
from tests.security.crawl import dump_database
from tests.security.test_confused_deputy import api, browser
from workflows import services
from workflows.models import Run, Webhook, Workflow

KEY_NAME = "Stripe live"  # personas.restricted_key


@pytest.fixture
def ledger(personas: Personas, echo_server) -> Workflow:
    """bob's workflow: it sends the Restricted key, and the `entry` input, to his ledger."""
    workflow = services.create_workflow(personas.member_use, name="Ledger", inputs=["entry"])
    services.create_action(
        personas.member_use,
        workflow,
        name="Post entry",
        action_type="send_api_request",
        config=http_action(
            f"{echo_server.url}/echo/{{{{inputs.entry}}}}",
            method="POST",
            headers=[{"name": "X-Ledger", "value": f"{{{{secret:{personas.restricted_key.pk}}}}}"}],
        ),
    )
    return workflow


@pytest.fixture
def outside(live_server) -> Iterator[httpx.Client]:
    """Another system, calling the webhook: no session, no API token, no CSRF token."""
    with httpx.Client(
        base_url=live_server.url, headers={"Connection": "close"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
def bobs_token(live_server, personas: Personas, ledger: Workflow) -> str:
    response = api(live_server, personas.member_use).post(f"/workflows/{ledger.pk}/webhook/")
    assert response.status_code == 201, response.text
    return response.json()["token"]


def _webhook_state(workflow: Workflow) -> tuple | None:
    return (
        Webhook.objects.filter(workflow=workflow)
        .values_list("token_hash", "created_by_id", "created_at")
        .first()
    )


def _assert_refused_naming_no_key(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert "uses secret keys you may not use" in response.text
    assert KEY_NAME not in response.text and RESTRICTED_VALUE not in response.text


def test_a_member_without_use_cannot_take_the_webhook_over_by_rotating_it(
    live_server, personas: Personas, ledger: Workflow, bobs_token: str, outside, echo_server
):
    # Rotating would make dave the person its runs act for, and give him a token.
    before = _webhook_state(ledger)
    dave_api = api(live_server, personas.member_nothing)
    _assert_refused_naming_no_key(dave_api.post(f"/workflows/{ledger.pk}/webhook/"))
    dave_page = browser(live_server, personas.member_nothing)
    for headers in ({"HX-Request": "true"}, {}):
        refused = dave_page.post(f"/workflows/{ledger.pk}/webhook/", headers=headers)
        assert refused.status_code == 403
        assert KEY_NAME not in refused.text and "/hooks/" not in refused.text
    assert _webhook_state(ledger) == before

    # Each refusal is audited as a denial on the key, naming the workflow.
    denials = AuditEvent.objects.filter(action=AuditAction.DENIED, actor=personas.member_nothing)
    assert denials.count() == 3
    assert {event.changes["workflow_id"] for event in denials} == {ledger.pk}
    assert not AuditEvent.objects.filter(
        action__startswith="webhook_", actor=personas.member_nothing
    ).exists()

    # bob's webhook still works, with bob's rights.
    accepted = outside.post(f"/hooks/{bobs_token}/", json={"entry": "e-1"})
    assert accepted.status_code == 202
    assert accepted.json()["triggered_by"] == personas.member_use.pk


def test_a_member_without_use_cannot_remove_the_webhook(
    live_server, personas: Personas, ledger: Workflow, bobs_token: str
):
    before = _webhook_state(ledger)
    _assert_refused_naming_no_key(
        api(live_server, personas.member_nothing).delete(f"/workflows/{ledger.pk}/webhook/")
    )
    refused = browser(live_server, personas.member_nothing).post(
        f"/workflows/{ledger.pk}/webhook/remove/"
    )
    assert refused.status_code == 403
    assert _webhook_state(ledger) == before


def test_another_organization_cannot_see_or_touch_the_webhook(
    live_server, personas: Personas, ledger: Workflow, bobs_token: str
):
    before = _webhook_state(ledger)
    mallory = api(live_server, personas.outsider)
    for method in ("GET", "POST", "DELETE"):
        response = mallory.request(method, f"/workflows/{ledger.pk}/webhook/")
        assert response.status_code == 404
        assert "Ledger" not in response.text and bobs_token[:8] not in response.text
    page = browser(live_server, personas.outsider)
    assert page.post(f"/workflows/{ledger.pk}/webhook/").status_code == 404
    assert page.post(f"/workflows/{ledger.pk}/webhook/remove/").status_code == 404
    assert _webhook_state(ledger) == before


def test_a_call_acts_for_the_webhooks_creator_whatever_credentials_come_with_it(
    live_server, personas: Personas, ledger: Workflow, bobs_token: str, outside
):
    # dave sends his own API token, and a signed-in session without a CSRF token: the
    # endpoint uses neither, so neither lends or changes whose rights the run uses.
    dave_token = Token.objects.get_or_create(user=personas.member_nothing)[0].key
    with_token = outside.post(
        f"/hooks/{bobs_token}/",
        json={"entry": "e-2"},
        headers={"Authorization": f"Token {dave_token}"},
    )
    assert with_token.status_code == 202
    session = browser(live_server, personas.member_nothing)
    del session.headers["X-CSRFToken"]
    with_session = session.post(f"/hooks/{bobs_token}/", json={"entry": "e-3"})
    assert with_session.status_code == 202
    runs = Run.objects.filter(workflow=ledger)
    assert {run.triggered_by_id for run in runs} == {personas.member_use.pk}

    # A wrong token gets nothing, whatever else is sent.
    wrong = outside.post(
        f"/hooks/{'A' * 43}/", json={}, headers={"Authorization": f"Token {dave_token}"}
    )
    assert wrong.status_code == 404 and runs.count() == 2


def test_the_shown_prefix_or_a_near_miss_of_the_token_is_not_a_token(
    live_server, personas: Personas, ledger: Workflow, bobs_token: str, outside
):
    near_misses = [
        bobs_token[:8],  # the prefix every member sees
        bobs_token[:-1],
        bobs_token + "x",
        bobs_token[:-1] + ("A" if bobs_token[-1] != "A" else "B"),
        bobs_token.upper() if bobs_token.upper() != bobs_token else bobs_token.lower(),
        hashlib.sha256(bobs_token.encode()).hexdigest(),  # the stored hash
    ]
    for token in near_misses:
        assert outside.post(f"/hooks/{token}/", json={}).status_code == 404
    assert not Run.objects.exists()


def test_a_creator_who_lost_use_sends_nothing_and_the_step_says_so(
    live_server, personas: Personas, ledger: Workflow, bobs_token: str, outside, echo_server
):
    secret_services.update_secret_key(
        personas.admin,
        personas.restricted_key,
        grants=[
            {"principal_type": "user", "principal_id": personas.member_manage.pk, "level": "manage"}
        ],
    )
    response = outside.post(f"/hooks/{bobs_token}/", json={"entry": "e-4"})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "failed"
    assert "is a secret key you may not use" in body["steps"][0]["error"]
    assert KEY_NAME not in response.text and RESTRICTED_VALUE not in response.text
    assert echo_server.requests == []
    # The refused use is audited against bob, on the key.
    assert AuditEvent.objects.filter(
        action=AuditAction.DENIED,
        actor=personas.member_use,
        secret_key_id=personas.restricted_key.pk,
    ).exists()


@pytest.mark.parametrize("how", ["removed", "deactivated"])
def test_a_creator_who_left_cannot_lend_their_rights(
    live_server, personas: Personas, ledger: Workflow, bobs_token: str, outside, how: str
):
    if how == "removed":
        secret_services.remove_member(personas.admin, personas.member_use.membership)
    else:
        personas.member_use.is_active = False
        personas.member_use.save(update_fields=["is_active"])
    response = outside.post(f"/hooks/{bobs_token}/", json={"entry": "e-5"})
    assert response.status_code == 403
    assert "set the webhook up again" in response.json()["detail"]
    assert not Run.objects.exists()


def test_the_token_is_in_no_table_no_log_and_no_later_answer(
    live_server,
    personas: Personas,
    ledger: Workflow,
    outside,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(WebhookRateThrottle, "THROTTLE_RATES", {"webhooks": "3/min"})
    bob = api(live_server, personas.member_use)
    first = bob.post(f"/workflows/{ledger.pk}/webhook/").json()["token"]
    second = bob.post(f"/workflows/{ledger.pk}/webhook/").json()["token"]
    tokens = [first, second]

    # Every kind of answer: accepted, refused (bad body, unknown input, rotated away),
    # throttled, and refused for a creator who left — Django logs 4xx with the path.
    assert outside.post(f"/hooks/{second}/", json={"entry": "e"}).status_code == 202
    assert outside.post(f"/hooks/{second}/", json=[1]).status_code == 400
    assert outside.post(f"/hooks/{second}/", json={"nope": 1}).status_code == 400
    assert outside.post(f"/hooks/{second}/", json={}).status_code == 429
    assert outside.post(f"/hooks/{first}/", json={}).status_code == 404
    monkeypatch.setattr(WebhookRateThrottle, "THROTTLE_RATES", {"webhooks": "100/min"})
    secret_services.remove_member(personas.admin, personas.member_use.membership)
    assert outside.post(f"/hooks/{second}/", json={}).status_code == 403

    # Later answers to anyone: the API, the workflow page, the run pages.
    admin_api = api(live_server, personas.admin)
    admin_page = browser(live_server, personas.admin)
    later = [
        admin_api.get(f"/workflows/{ledger.pk}/webhook/").text,
        admin_api.get("/runs/").text,
        admin_api.get("/audit-events/").text,
        admin_page.get(f"/workflows/{ledger.pk}/").text,
        admin_page.get(f"/workflows/{ledger.pk}/runs/").text,
        admin_page.get("/audit/").text,
    ]
    later += [admin_page.get(f"/workflows/runs/{run.pk}/").text for run in Run.objects.all()]
    assert second[:8] in later[0]  # the prefix, to tell tokens apart, is shown

    cells = [str(cell) for _, _, _, cell in dump_database(connection)]
    logged = [record.getMessage() for record in caplog.records]
    logged += [str(record.args) for record in caplog.records]
    for token in tokens:
        # The token after its 8-character prefix: nowhere, in any form of it.
        secret_part = token[8:]
        assert not any(secret_part in cell for cell in cells), "a token is in the database"
        assert not any(secret_part in text for text in logged), "a token is in the logs"
        assert not any(secret_part in text for text in later), "a token is shown again"
    # What is kept is the hash, and the refusals were logged without the token.
    assert (
        Webhook.objects.get(workflow=ledger).token_hash
        == hashlib.sha256(second.encode()).hexdigest()
    )
    refusals = [message for message in logged if message.startswith("A call of webhook ")]
    assert len(refusals) == 5
