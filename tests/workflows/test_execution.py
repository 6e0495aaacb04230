"""Executing actions for real: a local HTTP target, the real sandbox, the real database."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from django.utils import timezone

from secretsapp import services as secret_services
from secretsapp.models import AuditAction, AuditEvent, SecretKey
from tests.conftest import RESTRICTED_VALUE, TEAM_VALUE, Personas, code_action, http_action
from tests.factories import SecretKeyFactory
from workflows import reading, runs, services
from workflows.models import Run, RunStep
from workflows.redaction import encoded_forms


def _shown_steps(run: Run, reader) -> list[RunStep]:
    """The run's steps as stored, read back as ``reader`` sees them (names per reader)."""
    stored = Run.objects.prefetch_related("steps").get(pk=run.pk)
    reading.show_runs(reader, [stored])
    return list(stored.steps.all())


def _ref(key) -> str:
    return f"{{{{secret:{key.pk}}}}}"


def _assert_nothing_leaks(*values: str) -> None:
    """No value in any form in anything stored about runs."""
    stored = json.dumps(
        [
            list(Run.objects.values()),
            list(RunStep.objects.values()),
            list(AuditEvent.objects.values()),
        ],
        default=str,
    )
    for value in values:
        for form in encoded_forms(value):
            assert form not in stored, f"stored runs hold {form!r}"


@pytest.fixture
def workflow(personas: Personas):
    return services.create_workflow(personas.member_use, name="Charge", inputs=["customer"])


def _action(actor, workflow, config, *, name="Call", action_type="send_api_request"):
    return services.create_action(
        actor, workflow, name=name, action_type=action_type, config=config
    )


def test_the_target_gets_the_value_and_the_run_keeps_only_redactions(
    personas: Personas, workflow, echo_server
):
    key = personas.restricted_key
    action = _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo/{_ref(key)}",
            method="POST",
            query=[{"name": "api_key", "value": _ref(key)}],
            headers=[{"name": "Authorization", "value": f"Bearer {_ref(key)}"}],
            body={
                "type": "raw",
                "raw": f'{{"secret": "{_ref(key)}", "customer": "{{{{inputs.customer}}}}"}}',
            },
        ),
    )

    run = runs.enqueue(
        personas.member_use, action.workflow, action=action, inputs={"customer": "cus_1"}
    )

    received = echo_server.requests[0]
    assert received["headers"]["Authorization"] == f"Bearer {RESTRICTED_VALUE}"
    assert received["path"] == f"/echo/{quote(RESTRICTED_VALUE, safe='')}"
    assert f"api_key={quote(RESTRICTED_VALUE, safe='').replace('%20', '+')}" in received[
        "query"
    ] or ("api_key=" + quote(RESTRICTED_VALUE, safe="") in received["query"])
    assert json.loads(received["body"]) == {"secret": RESTRICTED_VALUE, "customer": "cus_1"}

    assert run.status == "succeeded"
    output = list(run.steps.all())[0].output
    assert output["status_code"] == 200
    stored = f"[redacted:{key.pk}]"  # names are shown per reader, never stored
    assert output["body"]["headers"]["Authorization"] == f"Bearer {stored}"
    assert stored in output["body"]["body"]
    shown = _shown_steps(run, personas.member_use)[0].shown_output
    assert shown["body"]["headers"]["Authorization"] == "Bearer [redacted:Stripe live]"
    assert "[redacted:Stripe live]" in shown["body"]["body"]
    _assert_nothing_leaks(RESTRICTED_VALUE)


def test_fields_body_and_basic_auth_echoed_back_are_redacted(
    personas: Personas, workflow, echo_server
):
    basic = base64.b64encode(f"bob:{TEAM_VALUE}".encode()).decode()
    action = _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/raw",
            method="PUT",
            headers=[{"name": "Authorization", "value": f"Basic {basic}"}],
            body={
                "type": "fields",
                "fields": [{"name": "token", "value": _ref(personas.team_key)}],
            },
        ),
    )
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    body = _shown_steps(run, personas.member_use)[0].shown_output["body"]
    assert json.loads(echo_server.requests[0]["body"]) == {"token": TEAM_VALUE}
    assert "[redacted:Slack webhook]" in body
    _assert_nothing_leaks(TEAM_VALUE)


def test_4xx_and_5xx_are_succeeded_steps_with_their_status(
    personas: Personas, workflow, echo_server
):
    action = _action(personas.member_use, workflow, http_action(f"{echo_server.url}/status/503"))
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    assert run.status == "succeeded"
    assert list(run.steps.all())[0].output["status_code"] == 503


def test_a_whole_url_kept_as_a_key_is_used_as_is(personas: Personas, workflow, echo_server):
    webhook = secret_services.create_secret_key(
        personas.admin, name="Webhook", value=f"{echo_server.url}/hooks/T000/B000"
    )
    action = _action(
        personas.member_use, workflow, http_action(_ref(webhook) + "?x=1", method="POST")
    )
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    assert run.status == "succeeded", list(run.steps.all())[0].error
    assert echo_server.requests[0]["path"] == "/hooks/T000/B000"


def test_a_key_that_is_not_a_valid_url_fails_its_step_with_query_rows_too(
    personas: Personas, workflow, echo_server
):
    # The query rows are merged into the URL after the key fills it in: an invalid URL
    # must fail the step (redacted, recorded, audited), not the request with a 500.
    webhook = secret_services.create_secret_key(
        personas.admin, name="Webhook", value="https://hooks.test:s3cr3tT0ken/path"
    )
    action = _action(
        personas.member_use,
        workflow,
        http_action(_ref(webhook), query=[{"name": "x", "value": "1"}]),
    )
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    assert run.status == "failed"
    assert list(run.steps.all())[0].error.startswith("Refused: the URL is not valid")
    assert "s3cr3tT0ken" not in list(run.steps.all())[0].error
    assert echo_server.requests == []
    assert AuditEvent.objects.filter(action=AuditAction.USED, secret_key_id=webhook.pk).exists()
    _assert_nothing_leaks("https://hooks.test:s3cr3tT0ken/path")


def test_rename_keeps_actions_working(personas: Personas, workflow, echo_server):
    action = _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo", headers=[{"name": "X-Key", "value": _ref(personas.team_key)}]
        ),
    )
    secret_services.rename_secret_key(personas.admin, personas.team_key, "Slack alerts")
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    assert run.status == "succeeded"
    assert echo_server.requests[0]["headers"]["X-Key"] == TEAM_VALUE
    shown = _shown_steps(run, personas.member_use)[0].shown_output
    assert shown["body"]["headers"]["X-Key"] == "[redacted:Slack alerts]"


def test_deleted_key_fails_the_step_clearly(personas: Personas, workflow, echo_server):
    action = _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo", headers=[{"name": "X-Key", "value": _ref(personas.team_key)}]
        ),
    )
    secret_services.delete_secret_key(personas.admin, personas.team_key)
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    step = list(run.steps.all())[0]
    assert (run.status, step.status) == ("failed", "failed")
    assert step.error == f"config.headers[0].value: {_ref(personas.team_key)} was deleted."
    assert echo_server.requests == []


def test_revoked_use_fails_at_run_time_and_is_audited(personas: Personas, workflow, echo_server):
    action = _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo", query=[{"name": "k", "value": _ref(personas.restricted_key)}]
        ),
    )
    secret_services.change_secret_access(personas.admin, personas.restricted_key, grants=[])
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    assert run.status == "failed"
    assert "may not use" in list(run.steps.all())[0].error
    assert echo_server.requests == []
    denial = AuditEvent.objects.filter(action=AuditAction.DENIED).get()
    assert denial.actor == personas.member_use
    _assert_nothing_leaks(RESTRICTED_VALUE)


def test_another_member_runs_with_their_own_rights(personas: Personas, workflow, echo_server):
    action = _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo", query=[{"name": "k", "value": _ref(personas.restricted_key)}]
        ),
    )
    # The viewer may run the workflow but holds no Use on the restricted key.
    run = runs.enqueue(personas.viewer, action.workflow, action=action, inputs={})
    assert run.status == "failed"
    assert echo_server.requests == []


def test_refused_address_is_a_failed_step(personas: Personas, workflow, settings):
    settings.EGRESS_ALLOWED_HOSTS = []
    action = _action(personas.member_use, workflow, http_action("http://10.0.0.1/internal"))
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    assert run.status == "failed"
    assert "10.0.0.1" in list(run.steps.all())[0].error


def test_steps_feed_later_steps_and_code_reads_variables(personas: Personas, workflow, echo_server):
    _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo/{{{{inputs.customer}}}}",
            headers=[{"name": "X-Key", "value": _ref(personas.team_key)}],
        ),
        name="Fetch",
    )
    _action(
        personas.member_use,
        workflow,
        code_action(
            "print('key is', variables['key'])\n"
            "path = variables['response']['body']['path']\n"
            "return {'path': path, 'length': len(variables['key'])}",
            response="{{steps.1}}",
            key=_ref(personas.team_key),
        ),
        name="Compute",
        action_type="run_code",
    )
    _action(
        personas.member_use,
        workflow,
        code_action(
            "console.log(variables.key);"
            "return {double: variables.length * 2, path: variables.path};",
            language="javascript",
            length="{{steps.2.result.length}}",
            path="{{steps.2.result.path}}",
            key=_ref(personas.team_key),
        ),
        name="Javascript",
        action_type="run_code",
    )
    run = runs.enqueue(personas.member_use, workflow, {"customer": "cus_9"})
    steps = _shown_steps(run, personas.member_use)
    assert [step.status for step in steps] == ["succeeded"] * 3, [step.error for step in steps]
    assert steps[1].shown_output["result"] == {"path": "/echo/cus_9", "length": len(TEAM_VALUE)}
    assert steps[1].shown_output["logs"].strip() == "key is [redacted:Slack webhook]"
    assert steps[2].shown_output["result"] == {
        "double": 2 * len(TEAM_VALUE),
        "path": "/echo/cus_9",
    }
    assert "[redacted:Slack webhook]" in steps[2].shown_output["logs"]
    _assert_nothing_leaks(TEAM_VALUE)


def test_code_that_raises_with_the_value_is_redacted(personas: Personas, workflow):
    action = _action(
        personas.member_use,
        workflow,
        code_action("raise ValueError('bad key ' + variables['key'])", key=_ref(personas.team_key)),
        action_type="run_code",
    )
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    step = _shown_steps(run, personas.member_use)[0]
    assert step.status == "failed"
    assert "ValueError" in step.shown_error and "[redacted:Slack webhook]" in step.shown_error
    _assert_nothing_leaks(TEAM_VALUE)


def test_a_failed_step_ends_the_run(personas: Personas, workflow, echo_server):
    _action(
        personas.member_use,
        workflow,
        code_action("raise RuntimeError('stop')"),
        action_type="run_code",
    )
    _action(personas.member_use, workflow, http_action(f"{echo_server.url}/echo"), name="Never")
    run = runs.enqueue(personas.member_use, workflow, {})
    assert [step.status for step in list(run.steps.all())] == ["failed"]
    assert echo_server.requests == []


def test_one_used_event_per_key_per_run_and_last_used(personas: Personas, workflow, echo_server):
    for name in ("One", "Two"):
        _action(
            personas.member_use,
            workflow,
            http_action(
                f"{echo_server.url}/echo", headers=[{"name": "X", "value": _ref(personas.team_key)}]
            ),
            name=name,
        )
    before = timezone.now()
    run = runs.enqueue(personas.member_use, workflow, {})
    used = AuditEvent.objects.filter(action=AuditAction.USED)
    assert [(event.secret_key_id, event.changes["run_id"]) for event in used] == [
        (personas.team_key.pk, str(run.pk))
    ]
    assert SecretKey.objects.get(pk=personas.team_key.pk).last_used_at >= before
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).last_used_at is None


def test_unknown_inputs_are_refused(personas: Personas, workflow):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="Unknown input"):
        runs.enqueue(personas.member_use, workflow, {"nope": 1})


def test_query_count_is_the_same_for_1_and_50_keys(
    personas: Personas, workflow, echo_server, django_assert_num_queries
):
    counts = []
    for size in (1, 50):
        keys = SecretKeyFactory.create_batch(size, organization=personas.organization)
        action = _action(
            personas.admin,
            workflow,
            http_action(
                f"{echo_server.url}/echo",
                headers=[
                    {"name": f"X-{index}", "value": _ref(key)} for index, key in enumerate(keys)
                ],
            ),
            name=f"{size} keys",
        )
        action = type(action).objects.select_related("workflow").get(pk=action.pk)
        with django_assert_num_queries(18) as captured:
            # Queueing (the membership is cached on the user): 1 run, 2 room in the
            # organization, 3 sent; the worker (eager here): 4 the run's organization,
            # 5-9 the claim (savepoint, organization lock, room, queued → running,
            # release), 10 the run, 11 the runner's membership now, 12 keys with values,
            # 13 still running (and which keys it uses), 14 used events (also the keys'
            # last use), 15 the step, 16 the end, 17 any run waiting for room; 18 the run
            # as it ended, for the caller.
            run = runs.enqueue(personas.admin, action.workflow, action=action, inputs={})
        assert run.status == "succeeded", list(run.steps.all())[0].error
        counts.append(len(captured))
    assert counts[0] == counts[1]


def test_a_wrong_encryption_key_fails_the_run_and_sends_no_ciphertext(
    personas: Personas, workflow, echo_server, monkeypatch
):
    from cryptography.fernet import Fernet, MultiFernet
    from encrypted_model_fields import fields as encrypted_fields

    action = _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo", headers=[{"name": "X", "value": _ref(personas.team_key)}]
        ),
    )
    monkeypatch.setattr(encrypted_fields, "CRYPTER", MultiFernet([Fernet(Fernet.generate_key())]))
    run = runs.enqueue(personas.member_use, action.workflow, action=action, inputs={})
    assert run.status == "failed"
    assert "cannot be decrypted" in list(run.steps.all())[0].error
    assert echo_server.requests == []


def test_used_events_hold_who_when_which_key_and_the_run(personas: Personas, workflow, echo_server):
    keys = [personas.team_key, personas.restricted_key]
    _action(
        personas.member_use,
        workflow,
        http_action(
            f"{echo_server.url}/echo",
            headers=[{"name": f"X-{index}", "value": _ref(key)} for index, key in enumerate(keys)],
        ),
    )
    run = runs.enqueue(personas.member_use, workflow, {})
    assert run.status == "succeeded"
    events = AuditEvent.objects.filter(action=AuditAction.USED).order_by("secret_key_name")
    assert [
        (
            event.organization_id,
            event.actor_id,
            event.actor_name,
            event.secret_key_id,
            event.secret_key_name,
            event.changes,
            # Recorded when the step that uses the key starts, before its value leaves.
            run.started_at <= event.created_at <= run.finished_at,
        )
        for event in events
    ] == [
        (
            personas.organization.pk,
            personas.member_use.pk,
            personas.member_use.username,
            key.pk,
            key.name,
            {"run_id": str(run.pk)},
            True,
        )
        for key in sorted(keys, key=lambda key: key.name)
    ], "each event as record_event would write it"
