"""The rules of workflows.runs that hold without a worker: claims, fair share, reaping,
cancel rights, bounded waiting, inputs never shown before they are redacted.
(tests/queue proves the same with real `celery worker` processes on Redis.)"""

from __future__ import annotations

import datetime
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from tests.conftest import RESTRICTED_VALUE, Personas, api_client_for, code_action
from workflows import runs
from workflows import services as workflow_services
from workflows.models import Run, RunStatus


@pytest.fixture
def workflow(personas: Personas):
    workflow = workflow_services.create_workflow(
        personas.member_use, name="Nightly", inputs=["note"]
    )
    workflow_services.create_action(
        personas.member_use,
        workflow,
        name="Echo",
        action_type="run_code",
        config=code_action("return variables['note']", note="{{inputs.note}}"),
    )
    return workflow


def _queued(workflow, user, **fields) -> Run:
    return Run.objects.create(
        organization_id=workflow.organization_id, workflow=workflow, triggered_by=user, **fields
    )


def test_a_run_is_claimed_once(personas: Personas, workflow):
    run = _queued(workflow, personas.member_use)

    assert runs.claim(run.pk) is not None
    assert runs.claim(run.pk) is None  # a second message, a second worker: nothing
    assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING


def test_an_organization_at_its_limit_leaves_the_run_queued_for_later(
    personas: Personas, workflow, settings
):
    settings.RUNS_PER_ORGANIZATION = 2
    for _ in range(2):
        _queued(workflow, personas.member_use, status=RunStatus.RUNNING, started_at=timezone.now())
    waiting = _queued(workflow, personas.member_use, dispatched_at=timezone.now())
    other_organization = workflow_services.create_workflow(personas.outsider, name="Globex")
    elsewhere = _queued(other_organization, personas.outsider)

    assert runs.claim(waiting.pk) is None
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.QUEUED
    assert waiting.dispatched_at is None  # the next run of Acme to end sends it
    assert runs.claim(elsewhere.pk) is not None  # Globex is not held up by Acme


def test_the_end_of_a_run_sends_the_oldest_waiting_run_of_its_organization(
    personas: Personas, workflow, settings
):
    settings.RUNS_PER_ORGANIZATION = 1
    running = _queued(
        workflow, personas.member_use, status=RunStatus.RUNNING, started_at=timezone.now()
    )
    oldest = _queued(workflow, personas.member_use, queued_inputs={"note": "first"})
    newer = _queued(workflow, personas.member_use, queued_inputs={"note": "second"})
    Run.objects.filter(pk=running.pk).update(status=RunStatus.SUCCEEDED)

    runs.dispatch_next(workflow.organization_id)  # eager here: the sent run executes now

    assert Run.objects.get(pk=oldest.pk).status == RunStatus.SUCCEEDED
    assert Run.objects.get(pk=newer.pk).status == RunStatus.SUCCEEDED  # it ended, and made room


def test_a_run_whose_heartbeat_stopped_is_failed_interrupted_and_a_live_one_is_not(
    personas: Personas, workflow, settings
):
    settings.RUNS_HEARTBEAT_TIMEOUT = 10
    long_ago = timezone.now() - datetime.timedelta(seconds=11)
    dead = _queued(
        workflow,
        personas.member_use,
        status=RunStatus.RUNNING,
        started_at=long_ago,
        heartbeat_at=long_ago,
    )
    alive = _queued(
        workflow,
        personas.member_use,
        status=RunStatus.RUNNING,
        started_at=long_ago,
        heartbeat_at=timezone.now(),
    )

    assert runs.reap() == 1

    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, dead.error) == (RunStatus.FAILED, runs.INTERRUPTED)
    assert dead.duration_ms >= 11_000
    assert alive.status == RunStatus.RUNNING


def test_a_heartbeat_after_the_run_was_declared_interrupted_stops_it(personas: Personas, workflow):
    run = _queued(workflow, personas.member_use, status=RunStatus.FAILED)
    assert runs.still_running(run) is False  # the worker aborts what it is doing


def test_the_sweeper_sends_again_a_queued_run_nobody_claimed(
    personas: Personas, workflow, settings
):
    settings.RUNS_REDISPATCH_SECONDS = 30
    lost = _queued(
        workflow,
        personas.member_use,
        dispatched_at=timezone.now() - datetime.timedelta(seconds=31),
        queued_inputs={"note": "lost"},
    )
    in_flight = _queued(workflow, personas.member_use, dispatched_at=timezone.now())

    runs.sweep()  # eager here: what it sends executes now

    assert Run.objects.get(pk=lost.pk).status == RunStatus.SUCCEEDED
    assert Run.objects.get(pk=in_flight.pk).status == RunStatus.QUEUED  # its message may come


def test_viewers_cancel_only_their_own_runs(personas: Personas, workflow):
    members_run = _queued(workflow, personas.member_use)
    viewers_run = _queued(workflow, personas.viewer)

    with pytest.raises(PermissionDenied):
        runs.cancel(personas.viewer, members_run)
    cancelled = runs.cancel(personas.viewer, viewers_run)
    by_a_member = runs.cancel(personas.member_nothing, members_run)

    assert cancelled.status == by_a_member.status == RunStatus.CANCELLED
    assert by_a_member.cancelled_by == personas.member_nothing
    with pytest.raises(runs.CannotCancel, match="already ended"):
        runs.cancel(personas.member_use, members_run)


def test_a_cancelled_queued_run_is_never_executed(personas: Personas, workflow):
    run = _queued(workflow, personas.member_use, queued_inputs={"note": "x"})
    runs.cancel(personas.member_use, run)

    assert runs.claim(run.pk) is None
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED and run.started_at is None
    assert run.queued_inputs == {}


def test_waiting_is_bounded_per_process(personas: Personas, workflow, settings):
    settings.RUNS_MAX_WAITERS = 1
    run = _queued(workflow, personas.member_use)

    started = time.monotonic()
    runs.wait_for(run, 1)
    waited_with_a_free_slot = time.monotonic() - started
    slot = runs._waiter_slots()
    slot.acquire()  # another request of this process is waiting
    try:
        started = time.monotonic()
        runs.wait_for(run, 1)
        waited_without = time.monotonic() - started
    finally:
        slot.release()

    assert waited_with_a_free_slot >= 1
    assert waited_without < 0.5  # answered at once: the caller polls


def test_inputs_are_shown_only_once_redacted(personas: Personas):
    """A value typed as an input by someone who knows it is redacted before anyone reads
    it: a queued run shows no inputs."""
    workflow = workflow_services.create_workflow(personas.member_use, name="Typed", inputs=["x"])
    workflow_services.create_action(
        personas.member_use,
        workflow,
        name="Uses the key",
        action_type="run_code",
        config=code_action("return 1", key=personas.restricted_key.reference),
    )
    queued = _queued(workflow, personas.member_use, queued_inputs={"x": RESTRICTED_VALUE})
    client = api_client_for(personas.member_use)

    before = client.get(f"/api/v1/runs/{queued.pk}/").json()
    ran = client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": {"x": RESTRICTED_VALUE}}, format="json"
    )

    assert before["inputs"] == {}
    assert RESTRICTED_VALUE not in str(before)
    assert ran.status_code == 200, ran.content
    assert ran.json()["inputs"] == {"x": "[redacted:Stripe live]"}
    stored = Run.objects.get(pk=ran.json()["id"])
    assert stored.queued_inputs == {}
    assert RESTRICTED_VALUE not in str(stored.inputs)
