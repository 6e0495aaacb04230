"""Runs on the real queue: Redis, `celery worker` processes, the API over real HTTP.

The attacks: a slow partner API or a viewer's burst of runs holding the web servers; a run
sent twice (a Send API Request is not idempotent); a worker killed mid-run leaving a run
"running" forever or starting it again; a broker that forgets its messages; one
organization taking every worker; a cancelled run that keeps calling out.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis

from secretsapp import services as secret_services
from tests.conftest import Personas, api, code_action, http_action
from tests.queue.conftest import eventually, status_of
from workflows import services as workflow_services
from workflows import webhooks
from workflows.models import Run, RunStatus
from workflows.runs import INTERRUPTED
from workflows.tasks import execute_run

pytestmark = pytest.mark.queue


def _http_workflow(personas: Personas, url: str, name: str = "Call partner", actor=None):
    actor = actor or personas.member_use
    workflow = workflow_services.create_workflow(actor, name=name)
    action = workflow_services.create_action(
        actor,
        workflow,
        name="Call",
        action_type="send_api_request",
        config=http_action(url, headers=[{"name": "Authorization", "value": "Bearer x"}]),
    )
    return workflow, action


def _code_workflow(personas: Personas, code: str):
    workflow = workflow_services.create_workflow(personas.member_use, name="Code")
    action = workflow_services.create_action(
        personas.member_use,
        workflow,
        name="Compute",
        action_type="run_code",
        config=code_action(code),
    )
    return workflow, action


def test_a_run_goes_through_the_queue_to_a_worker(personas, live_server, workers, target):
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/0.2/a")
    client = api(live_server, personas.viewer, timeout=90)  # viewers run workflows

    queued = client.post(f"/workflows/{workflow.pk}/runs/", json={"inputs": {}})

    assert queued.status_code == 202, queued.text
    run = queued.json()
    assert run["status"] == "queued"
    assert run["started_at"] is None and run["finished_at"] is None
    assert queued.headers["Location"] == f"{live_server.url}/api/v1/runs/{run['id']}/"
    assert target.requests == []  # nothing ran in the web request

    workers.start()

    def finished():
        """the run ended"""
        body = client.get(f"/runs/{run['id']}/").json()
        return body if body["status"] in ("succeeded", "failed") else None

    done = eventually(finished)
    assert done["status"] == "succeeded", done
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert done["steps"][0]["output"]["status_code"] == 200
    assert len(target.requests) == 1


def test_wait_returns_the_finished_run_or_202_when_it_takes_longer(
    personas, live_server, workers, target
):
    quick, quick_action = _http_workflow(personas, f"{target.url}/sleep/0/a", name="Quick")
    slow, _ = _http_workflow(personas, f"{target.url}/sleep/4/a", name="Slow")
    client = api(live_server, personas.member_use, timeout=90)
    workers.start()

    finished = client.post(f"/workflows/{quick.pk}/runs/", json={"wait": 30})
    executed = client.post(f"/actions/{quick_action.pk}/execute/", json={"wait": 30})
    started = time.monotonic()
    pending = client.post(f"/workflows/{slow.pk}/runs/", json={"wait": 1})
    waited = time.monotonic() - started

    assert finished.status_code == 200, finished.text
    assert finished.json()["status"] == "succeeded"
    assert finished.json()["steps"][0]["output"]["status_code"] == 200
    assert executed.status_code == 200, executed.text
    assert set(executed.json()) == {"run_id", "status", "output", "error", "duration_ms"}
    assert executed.json()["output"]["status_code"] == 200
    assert pending.status_code == 202, pending.text
    assert pending.json()["status"] in ("queued", "running")
    assert waited >= 1  # it did wait, and then answered without the run
    too_long = client.post(f"/workflows/{quick.pk}/runs/", json={"wait": 61})
    assert too_long.status_code == 400
    assert "wait" in too_long.json()


def test_a_cancelled_queued_run_never_starts(personas, live_server, workers, target):
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/0/a")
    runner = api(live_server, personas.member_use, timeout=90)
    run_id = runner.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"]

    viewer = api(live_server, personas.viewer, timeout=90)
    refused = viewer.post(f"/runs/{run_id}/cancel/")
    cancelled = runner.post(f"/runs/{run_id}/cancel/")

    assert refused.status_code == 403, refused.text  # not their run
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"] == "Cancelled by bob-use."
    assert cancelled.json()["cancelled_by"] == personas.member_use.pk
    # The worker gets the message afterwards, and leaves the run alone.
    workers.start()
    time.sleep(2)
    assert status_of(run_id) == "cancelled"
    assert target.requests == []
    again = runner.post(f"/runs/{run_id}/cancel/")
    assert again.status_code == 409
    assert "already ended" in again.json()["detail"]


def test_cancelling_a_running_code_step_kills_its_sandbox(personas, live_server, workers):
    workflow, _ = _code_workflow(personas, "import time\ntime.sleep(30)\nreturn 'slept'")
    quick, _ = _code_workflow(personas, "return 'quick'")
    workers.start(concurrency=1)  # one process: it is free again only once the step stops
    client = api(live_server, personas.member_use, timeout=90)
    run_id = client.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"]
    eventually(lambda: status_of(run_id) == "running")
    time.sleep(1)  # inside the sandbox by now

    cancelled_at = time.monotonic()
    answer = client.post(f"/runs/{run_id}/cancel/")
    after = client.post(f"/workflows/{quick.pk}/runs/", json={"wait": 20})

    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    assert after.status_code == 200, after.text
    assert after.json()["steps"][0]["output"]["result"] == "quick"
    assert time.monotonic() - cancelled_at < 25  # not the 30 s of the sleeping code
    run = client.get(f"/runs/{run_id}/").json()
    assert run["status"] == "cancelled"
    assert run["steps"][0]["status"] == "failed"
    assert run["steps"][0]["error"].startswith("Cancelled while this step ran")


def test_cancelling_a_running_request_aborts_it(personas, live_server, workers, target):
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/30/slow")
    workers.start()
    client = api(live_server, personas.member_use, timeout=90)
    run_id = client.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"]
    eventually(lambda: target.requests, timeout=30)

    cancelled_at = time.monotonic()
    assert client.post(f"/runs/{run_id}/cancel/").status_code == 200
    hung_up = eventually(lambda: target.hung_up, timeout=10)

    # The connection was closed, not left to the 30 s of the target (nor the read timeout).
    assert hung_up[0]["at"] - cancelled_at < 20
    step = eventually(lambda: Run.objects.get(pk=run_id).steps.first(), timeout=10)
    assert step.error.startswith("Cancelled while this step ran")
    assert status_of(run_id) == "cancelled"


def test_a_worker_killed_mid_run_leaves_it_failed_interrupted_and_never_sends_it_again(
    personas, live_server, workers, target
):
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/3/a")
    first = workers.start(concurrency=1)
    client = api(live_server, personas.member_use, timeout=90)
    run_id = client.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"]
    eventually(lambda: target.requests, timeout=30)

    workers.kill(first)  # kill -9 of the worker and its pool process, mid-request
    workers.start(concurrency=1)  # a worker is back, sweeping

    def interrupted():
        """the run is marked failed"""
        return status_of(run_id) == RunStatus.FAILED

    # Bounded: heartbeat timeout (3 s here) + sweep interval + the new worker's start-up.
    eventually(interrupted, timeout=30)
    run = client.get(f"/runs/{run_id}/").json()
    assert run["error"] == INTERRUPTED
    time.sleep(4)  # past another heartbeat timeout and resend delay: nothing starts it again
    assert len(target.requests) == 1
    assert status_of(run_id) == RunStatus.FAILED


def test_reading_a_run_whose_worker_died_marks_it_interrupted(
    personas, live_server, workers, target
):
    """With no worker left to sweep, the next read still tells the truth."""
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/3/a")
    only = workers.start(concurrency=1)
    client = api(live_server, personas.member_use, timeout=90)
    run_id = client.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"]
    eventually(lambda: target.requests, timeout=30)
    workers.kill(only)

    assert client.get(f"/runs/{run_id}/").json()["status"] == "running"  # not yet stale
    time.sleep(3.5)
    assert client.get(f"/runs/{run_id}/").json()["status"] == "failed"


def test_a_message_sent_twice_runs_the_run_once(personas, live_server, workers, target, queue):
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/1/a")
    client = api(live_server, personas.member_use, timeout=90)
    run_id = client.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"]
    for _ in range(3):  # a redelivery, a resend, a duplicate: all the same run
        execute_run.apply_async((run_id,), queue=queue)

    workers.start(concurrency=4)
    eventually(lambda: status_of(run_id) == "succeeded")
    time.sleep(1)
    assert len(target.requests) == 1


def test_queued_runs_survive_the_broker_losing_its_messages(
    personas, live_server, workers, target, broker, queue
):
    """Redis here keeps nothing on disk: a restart empties the queue. The runs are rows,
    and the sweeper sends the ones nobody claimed again."""
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/0/a")
    client = api(live_server, personas.member_use, timeout=90)
    run_ids = [
        client.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"] for _ in range(3)
    ]
    assert broker.llen(queue) == 3
    broker.delete(queue)  # what a restart of the broker does to them

    workers.start()

    eventually(lambda: all(status_of(run_id) == "succeeded" for run_id in run_ids))
    assert len(target.requests) == 3


def test_one_organization_cannot_take_every_worker(
    personas, live_server, workers, target, settings
):
    settings.RUNS_PER_ORGANIZATION = 2
    busy, _ = _http_workflow(personas, f"{target.url}/sleep/1.5/acme")
    other, _ = _http_workflow(
        personas, f"{target.url}/sleep/0.2/globex", name="Other org", actor=personas.outsider
    )
    workers.start(concurrency=3, RUNS_PER_ORGANIZATION=2)
    workers.start(concurrency=3, RUNS_PER_ORGANIZATION=2)
    acme = api(live_server, personas.member_use, timeout=90)
    globex = api(live_server, personas.outsider, timeout=90)

    acme_runs = [acme.post(f"/workflows/{busy.pk}/runs/", json={}).json()["id"] for _ in range(6)]
    globex_run = globex.post(f"/workflows/{other.pk}/runs/", json={}).json()["id"]

    eventually(lambda: status_of(globex_run) == "succeeded", timeout=30)
    acme_left = Run.objects.filter(pk__in=acme_runs).exclude(status="succeeded").count()
    eventually(lambda: all(status_of(run_id) == "succeeded" for run_id in acme_runs), timeout=60)
    assert target.most_in_flight["acme"] == 2  # never more than its share
    assert acme_left >= 2  # Globex did not wait behind Acme's backlog
    assert len(target.requests) == 7


def test_a_burst_of_slow_runs_holds_no_web_thread(personas, live_server, workers, target):
    """The attack of the issue: a viewer starts 12 runs of an 8-second step at once. Each
    answer comes back queued, and the sign-in page answers meanwhile."""
    workflow, action = _http_workflow(personas, f"{target.url}/sleep/8/slow")
    workers.start(concurrency=2)
    viewer = api(live_server, personas.viewer, timeout=90)
    answers: list = []

    def start() -> None:
        answers.append(viewer.post(f"/actions/{action.pk}/execute/", json={}))

    threads = [threading.Thread(target=start) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sign_in = httpx.get(f"{live_server.url}/login/", timeout=30)

    assert [answer.status_code for answer in answers] == [202] * 12
    assert all(answer.json()["status"] in ("queued", "running") for answer in answers)
    assert sign_in.status_code == 200
    assert Run.objects.filter(status__in=["queued", "running"]).count() == 12
    # Stop them: cancelled runs end at once.
    for answer in answers:
        viewer.post(f"/runs/{answer.json()['id']}/cancel/")
    assert not Run.objects.exclude(status="cancelled").exists()


def test_a_broker_restart_loses_no_run_and_runs_none_twice(
    personas, live_server, workers, target, own_broker, queue
):
    """The broker really restarts (no persistence: its queue is gone), with one run in
    progress and four queued behind it."""
    workflow, _ = _http_workflow(personas, f"{target.url}/sleep/2/a")
    workers.start(concurrency=1, CELERY_BROKER_URL=own_broker.url)
    client = api(live_server, personas.member_use, timeout=90)
    run_ids = [
        client.post(f"/workflows/{workflow.pk}/runs/", json={}).json()["id"] for _ in range(5)
    ]
    eventually(lambda: target.requests, timeout=30)
    assert redis.Redis.from_url(own_broker.url).llen(queue) >= 3  # waiting in the broker

    own_broker.restart()
    after = client.post(f"/workflows/{workflow.pk}/runs/", json={})  # the web reconnects

    assert after.status_code == 202, after.text
    run_ids.append(after.json()["id"])
    eventually(lambda: all(status_of(run_id) == "succeeded" for run_id in run_ids), timeout=90)
    time.sleep(1)
    assert len(target.requests) == 6


def test_a_webhook_run_goes_through_the_queue_with_its_creators_rights_of_the_moment(
    personas, live_server, workers, target
):
    """bob set the webhook up; the key it sends is granted to him. Between the call and the
    run, his grant goes: the worker checks his rights when the run starts, not the web when
    it was queued."""
    workflow = workflow_services.create_workflow(personas.member_use, name="Hooked")
    workflow_services.create_action(
        personas.member_use,
        workflow,
        name="Call",
        action_type="send_api_request",
        config=http_action(
            f"{target.url}/sleep/0/hook",
            headers=[{"name": "X-Key", "value": personas.restricted_key.reference}],
        ),
    )
    _, token = webhooks.create_or_rotate(personas.member_use, workflow)
    hook = httpx.Client(base_url=live_server.url, headers={"Connection": "close"}, timeout=30)
    reader = api(live_server, personas.member_use, timeout=90)

    allowed = hook.post(f"/hooks/{token}/", json={})
    workers.start()
    eventually(lambda: status_of(allowed.json()["id"]) == "succeeded")
    workers.stop_all()  # so that the next call waits queued while the grant goes
    refused = hook.post(f"/hooks/{token}/", json={})
    secret_services.update_secret_key(
        personas.admin,
        personas.restricted_key,
        grants=[
            {"principal_type": "user", "principal_id": personas.member_manage.pk, "level": "manage"}
        ],
    )
    workers.start()
    eventually(lambda: status_of(refused.json()["id"]) == "failed")

    assert allowed.status_code == refused.status_code == 202
    assert allowed.json()["trigger"] == "webhook"
    assert allowed.json()["triggered_by"] == personas.member_use.pk
    step = reader.get(f"/runs/{refused.json()['id']}/").json()["steps"][0]
    assert "may not use" in step["error"]
    assert len(target.requests) == 1  # the refused run sent nothing
