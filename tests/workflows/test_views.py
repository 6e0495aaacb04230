"""Workflow pages: the builder's forms, permissions, running, and no value in any page."""

from __future__ import annotations

import datetime

import pytest
from django.utils import timezone

from tests.conftest import TEAM_VALUE, Personas
from workflows import services
from workflows.models import Action, Run, RunStep, Workflow


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


# --- Runs on the queue: the live run page, cancelling, the lists ----------------------------


def _run(personas: Personas, workflow: Workflow, status: str = "queued", **fields) -> Run:
    """A run as the queue leaves it in ``status`` (made directly: in the tests a run queued
    through the page has already ended when the page shows it)."""
    fields.setdefault("triggered_by", personas.member_use)
    return Run.objects.create(
        organization=personas.organization, workflow=workflow, status=status, **fields
    )


def _step(run: Run, output: object, position: int = 1) -> RunStep:
    return RunStep.objects.create(
        run=run,
        position=position,
        name="Post",
        type="send_api_request",
        status="succeeded",
        output=output,
        duration_ms=12,
    )


def _live(client, run: Run, state: str = ""):
    return client.get(f"/workflows/runs/{run.pk}/live/", {"state": state}, HTTP_HX_REQUEST="true")


def test_run_now_goes_to_the_run_page_without_claiming_how_the_run_ended(
    client, personas: Personas, workflow
):
    response = _signed_in(client, personas.viewer).post(
        f"/workflows/{workflow.pk}/run/", {"input-channel": "general"}, follow=True
    )
    run = Run.objects.get()
    assert response.redirect_chain == [(f"/workflows/runs/{run.pk}/", 302)]
    # The page shows the status (here already the end: Celery is eager in tests); no
    # message says "succeeded" or "failed" for a run that was only queued.
    assert [str(message) for message in response.context["messages"]] == []


def test_a_queued_run_page_polls_its_live_part_every_second(client, personas: Personas, workflow):
    run = _run(personas, workflow)
    html = _signed_in(client, personas.member_use).get(f"/workflows/runs/{run.pk}/").content
    html = html.decode()
    assert f'hx-get="/workflows/runs/{run.pk}/live/?state=queued.0.0.0"' in html
    assert 'hx-trigger="every 1s"' in html and 'hx-swap="outerHTML"' in html
    assert '<span class="status queued">Queued</span>' in html
    assert "Waiting for a worker to start the run." in html
    assert "<dt>Started</dt><dd>—</dd>" in html and "<dt>Duration</dt><dd>—" in html
    assert "None" not in html
    assert ">Cancel run</button>" in html


def test_a_finished_run_page_does_not_poll(client, personas: Personas, workflow):
    run = _run(personas, workflow, "succeeded", duration_ms=40)
    html = _signed_in(client, personas.member_use).get(f"/workflows/runs/{run.pk}/").content
    html = html.decode()
    assert "hx-trigger" not in html and "/live/" not in html
    assert "<dt>Duration</dt><dd>40 ms" in html
    assert "Cancel run" not in html


def test_the_live_part_answers_204_until_the_run_changes_then_stops_polling_once_it_ended(
    client, personas: Personas, workflow, django_assert_num_queries
):
    client = _signed_in(client, personas.member_use)
    run = _run(personas, workflow)
    client.get("/workflows/")  # the session and the user are loaded once before counting

    # 1 session, 2 user, 3 membership, 4 the run, 5 its steps
    with django_assert_num_queries(5):
        response = _live(client, run, "queued.0.0.0")
    assert response.status_code == 204 and response.content == b""

    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(status="running", started_at=now, heartbeat_at=now)
    # 1 session, 2 user, 3 membership, 4 the run, 5 its steps, 6 whether its worker died,
    # 7 who ran it (it has used no key yet: nothing asks which keys the reader may Use)
    with django_assert_num_queries(7):
        response = _live(client, run, "queued.0.0.0")
    html = response.content.decode()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]  # each poll reaches the server
    assert '<span class="status running">Running</span>' in html
    assert f'hx-get="/workflows/runs/{run.pk}/live/?state=running.0.0.0"' in html
    assert "<dd>running…</dd>" in html
    assert 'hx-swap-oob="innerHTML:#run-announcement">Run status: Running.' in html

    _step(run, {"status_code": 200, "body": "delivered"})
    Run.objects.filter(pk=run.pk).update(
        status="succeeded",
        finished_at=now,
        duration_ms=1234,
        secret_key_ids=[str(personas.team_key.pk)],
    )
    # 1 session, 2 user, 3 membership, 4 the run, 5 its steps, 6 which of its keys the
    # reader may Use, 7 who ran it (an ended run: nobody asks whether its worker died)
    with django_assert_num_queries(7):
        response = _live(client, run, "running.0.0.0")
    html = response.content.decode()
    assert '<span class="status succeeded">Succeeded</span>' in html
    assert "delivered" in html and "<dd>1234 ms</dd>" in html
    # The finished part has no trigger: the browser stops asking.
    assert "hx-trigger" not in html and "hx-get" not in html
    assert "Cancel run" not in html


def test_the_live_part_shows_the_inputs_once_the_worker_has_stored_them(
    client, personas: Personas, workflow
):
    # The worker stores a run's inputs, redacted, with its first step's check: that may
    # change nothing else the live part shows.
    now = timezone.now()
    run = _run(personas, workflow, "running", started_at=now, heartbeat_at=now)
    client = _signed_in(client, personas.member_use)
    assert _live(client, run, "running.0.0.0").status_code == 204
    Run.objects.filter(pk=run.pk).update(inputs={"channel": "general"})
    response = _live(client, run, "running.0.0.0")
    assert response.status_code == 200
    assert '<span class="mono">channel=general</span>' in response.content.decode()


def test_a_reader_without_use_never_sees_the_outputs_in_the_live_part(
    client, personas: Personas, workflow
):
    run = _run(
        personas,
        workflow,
        "running",
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        inputs={"channel": "payroll-42"},
        secret_key_ids=[str(personas.restricted_key.pk)],
    )
    _step(run, {"body": f"balance 981 [redacted:{personas.restricted_key.pk}]"})

    for state in ("", "running.0.1.1"):  # the first answer, and one after the step ended
        response = _live(_signed_in(client, personas.member_nothing), run, state)
        html = response.content.decode()
        assert response.status_code == 200
        assert "this run used secret keys you may not use" in html
        assert "balance 981" not in html and "payroll-42" not in html
        assert "Stripe live" not in html and "<pre" not in html
    page = client.get(f"/workflows/runs/{run.pk}/").content.decode()
    assert "balance 981" not in page and "payroll-42" not in page

    shown = _live(_signed_in(client, personas.member_use), run).content.decode()
    assert "balance 981 [redacted:Stripe live]" in shown and "payroll-42" in shown


def test_the_live_part_of_a_foreign_run_is_404(client, personas: Personas, workflow):
    run = _run(personas, workflow)
    client = _signed_in(client, personas.outsider)
    assert _live(client, run).status_code == 404
    assert client.get(f"/workflows/runs/{run.pk}/").status_code == 404


def test_a_poll_after_signing_out_reloads_the_page_instead_of_showing_the_sign_in_form(
    client, personas: Personas, workflow
):
    run = _run(personas, workflow)
    response = _live(client, run, "queued.0.0.0")
    assert response.status_code == 200 and response["HX-Refresh"] == "true"
    assert response.content == b""
    plain = client.get(f"/workflows/runs/{run.pk}/live/")
    assert plain.status_code == 302 and plain["Location"].startswith("/login/")


def test_the_runner_cancels_their_queued_run(client, personas: Personas, workflow):
    run = _run(personas, workflow)
    response = _signed_in(client, personas.member_use).post(
        f"/workflows/runs/{run.pk}/cancel/", follow=True
    )
    assert response.redirect_chain == [(f"/workflows/runs/{run.pk}/", 302)]
    html = response.content.decode()
    assert "Run cancelled before it started." in html
    assert '<span class="status cancelled">Cancelled</span>' in html
    assert "Cancelled by bob-use." in html
    assert "Cancel run" not in html and "hx-trigger" not in html
    run.refresh_from_db()
    assert (run.status, run.cancelled_by) == ("cancelled", personas.member_use)


def test_an_editor_cancels_a_running_run_of_someone_else(client, personas: Personas, workflow):
    run = _run(
        personas,
        workflow,
        "running",
        triggered_by=personas.viewer,
        started_at=timezone.now() - datetime.timedelta(seconds=2),
        heartbeat_at=timezone.now(),
    )
    client = _signed_in(client, personas.member_nothing)
    assert ">Cancel run</button>" in client.get(f"/workflows/runs/{run.pk}/").content.decode()
    html = client.post(f"/workflows/runs/{run.pk}/cancel/", follow=True).content.decode()
    assert "Run cancelled: the step in progress is being stopped." in html
    run.refresh_from_db()
    assert run.status == "cancelled" and run.duration_ms >= 2000


def test_a_viewer_cannot_cancel_the_run_of_someone_else(client, personas: Personas, workflow):
    run = _run(personas, workflow)
    client = _signed_in(client, personas.viewer)
    page = client.get(f"/workflows/runs/{run.pk}/").content.decode()
    assert "Cancel run" not in page
    assert "hx-trigger" in page  # the viewer still follows the run
    response = client.post(f"/workflows/runs/{run.pk}/cancel/")
    assert response.status_code == 403
    assert Run.objects.get(pk=run.pk).status == "queued"


def test_a_viewer_cancels_their_own_run(client, personas: Personas, workflow):
    run = _run(personas, workflow, triggered_by=personas.viewer)
    response = _signed_in(client, personas.viewer).post(f"/workflows/runs/{run.pk}/cancel/")
    assert response.status_code == 302
    assert Run.objects.get(pk=run.pk).status == "cancelled"


def test_cancelling_a_foreign_run_is_404(client, personas: Personas, workflow):
    run = _run(personas, workflow)
    response = _signed_in(client, personas.outsider).post(f"/workflows/runs/{run.pk}/cancel/")
    assert response.status_code == 404
    assert Run.objects.get(pk=run.pk).status == "queued"


def test_cancelling_a_run_that_already_ended_says_so(client, personas: Personas, workflow):
    run = _run(personas, workflow, "failed", error="Step 1 failed.")
    response = _signed_in(client, personas.member_use).post(
        f"/workflows/runs/{run.pk}/cancel/", follow=True
    )
    assert response.redirect_chain == [(f"/workflows/runs/{run.pk}/", 302)]
    assert [str(message) for message in response.context["messages"]] == [
        "This run has already ended (failed)."
    ]
    assert Run.objects.get(pk=run.pk).status == "failed"


def test_cancelling_needs_a_post(client, personas: Personas, workflow):
    run = _run(personas, workflow)
    response = _signed_in(client, personas.member_use).get(f"/workflows/runs/{run.pk}/cancel/")
    assert response.status_code == 405
    assert Run.objects.get(pk=run.pk).status == "queued"


def test_run_lists_show_when_runs_were_queued_and_no_duration_until_they_end(
    client, personas: Personas, workflow
):
    queued_at = timezone.now() - datetime.timedelta(minutes=5, seconds=30)
    _run(personas, workflow, created_at=queued_at)
    _run(personas, workflow, "running", started_at=timezone.now())
    _run(personas, workflow, "cancelled", triggered_by=personas.viewer)
    _run(personas, workflow, "succeeded", duration_ms=75)
    client = _signed_in(client, personas.member_use)

    history = client.get(f"/workflows/{workflow.pk}/runs/").content.decode()
    for status in ("Queued", "Running", "Cancelled", "Succeeded"):
        assert f'<span class="status {status.lower()}">{status}</span>' in history
    assert timezone.localtime(queued_at).strftime("%Y-%m-%d %H:%M:%S") in history
    assert "<td>running…</td>" in history and "<td>—</td>" in history
    assert "<td>75 ms</td>" in history
    assert "None" not in history

    recent = client.get(f"/workflows/{workflow.pk}/").content.decode()
    # timesince puts a no-break space between the number and the unit.
    assert "5\xa0minutes ago · —" in recent and "· running…" in recent and "· 75 ms" in recent
    assert "None ms" not in recent
