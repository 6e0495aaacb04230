"""The life of a run on the queue: queued → running → succeeded | failed | cancelled.

The web queues a run (a row, then a Celery message naming it); a worker claims it and
``workflows.execution`` executes it. The row is the truth, the message only a wake-up:

- **At most once.** A worker claims a run with one conditional UPDATE (queued → running);
  a second message for the same run, or a second worker, finds it no longer queued.
  A run is never started again: a run whose worker died is marked failed, "interrupted".
- **Fair share.** A claim counts the organization's running runs under a lock on the
  organization's row: at most RUNS_PER_ORGANIZATION run at once; a message that finds no
  room leaves its run queued, and the next run of that organization to end sends it.
- **Nothing lost.** A worker marks its running run alive every RUNS_HEARTBEAT_SECONDS
  (``Heartbeat``); the sweeper in every worker (and every read of a run) marks a running
  run failed once its heartbeat is older than RUNS_HEARTBEAT_TIMEOUT, and sends again a
  queued run whose message went unanswered for RUNS_REDISPATCH_SECONDS (a broker that
  restarted and forgot its messages, a worker killed holding one).
- **Cancel.** A queued run is cancelled before it starts; a running one is marked
  cancelled, and its worker's heartbeat sees it and aborts the step in progress (the
  sandbox killed, the HTTP call's socket shut down: ``workflows.cancellation``).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from secretsapp import access as secret_access
from secretsapp.models import Organization
from workflows import access, cancellation
from workflows.models import (
    FINISHED_STATUSES,
    Action,
    Run,
    RunStatus,
    RunTrigger,
    Webhook,
    Workflow,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from secretsapp.access import AnyUser

logger = logging.getLogger(__name__)

INTERRUPTED = (
    "Interrupted: the worker running it stopped (killed or lost) before it finished. "
    "It was not started again, because a step may already have had its effect."
)


# --- Queueing (web) ----------------------------------------------------------------------


def enqueue(
    actor: AbstractBaseUser,
    workflow: Workflow,
    inputs: Any,
    *,
    action: Action | None = None,
    webhook: Webhook | None = None,
) -> Run:
    """Queue a run of ``workflow`` (or of its one ``action``) with ``actor``'s rights.

    Inputs are checked now (a 400 for the caller); keys and permissions when it starts."""
    from workflows.execution import clean_inputs

    access.require_membership(actor, workflow.organization_id)
    inputs = clean_inputs(workflow, inputs)
    # Committed before the message is sent (callers hold no transaction), so the worker
    # that gets it finds the run; were it not yet visible, the sweeper sends it again.
    run = Run.objects.create(
        organization_id=workflow.organization_id,
        workflow=workflow,
        action=action,
        single_action=action is not None,
        triggered_by=actor,
        trigger=RunTrigger.WEBHOOK if webhook else RunTrigger.PERSON,
        webhook=webhook,
        queued_inputs=inputs,
    )
    if _has_room(run.organization_id):
        dispatch([run.pk])
    run.refresh_from_db()  # in eager mode (tests) it has run by now
    return run


def _running_count(organization_id: int) -> int:
    return Run.objects.filter(organization_id=organization_id, status=RunStatus.RUNNING).count()


def _has_room(organization_id: int) -> bool:
    return _running_count(organization_id) < settings.RUNS_PER_ORGANIZATION


def dispatch(run_ids: list[Any]) -> None:
    """Send a message for each run. A broker that cannot be reached loses nothing: the run
    stays queued, unsent, and the sweeper sends it once the broker is back."""
    from workflows.tasks import execute_run

    for run_id in run_ids:
        Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(dispatched_at=timezone.now())
        try:
            execute_run.apply_async((str(run_id),), queue=settings.RUNS_QUEUE)
        except OperationalError:
            logger.warning("The broker could not be reached; run %s stays queued.", run_id)
            Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(dispatched_at=None)
            return


def dispatch_next(organization_id: int) -> None:
    """Send the organization's oldest waiting runs, as many as it has room for."""
    waiting = Run.objects.filter(
        organization_id=organization_id, status=RunStatus.QUEUED, dispatched_at__isnull=True
    )
    if not waiting.exists():  # the usual case: one query, no lock
        return
    with transaction.atomic():
        _lock_organization(organization_id)
        room = settings.RUNS_PER_ORGANIZATION - _running_count(organization_id)
        if room <= 0:
            return
        oldest = list(waiting.order_by("created_at").values_list("pk", flat=True)[:room])
    dispatch(oldest)


def _lock_organization(organization_id: int) -> None:
    # Claims, and the ends of runs that make room, of one organization happen one at a time
    # (PostgreSQL: this row lock; SQLite: its IMMEDIATE transactions take the write lock).
    # FOR NO KEY UPDATE: runs and audit events inserted meanwhile (their foreign-key checks
    # take KEY SHARE on this row) do not wait for a claim.
    list(
        Organization.objects.select_for_update(no_key=True)
        .filter(pk=organization_id)
        .values_list("pk")
    )


# --- Waiting (web) -----------------------------------------------------------------------

_waiters_lock = threading.Lock()
_waiters: dict[int, threading.BoundedSemaphore] = {}


def _waiter_slots() -> threading.BoundedSemaphore:
    size = settings.RUNS_MAX_WAITERS
    with _waiters_lock:
        return _waiters.setdefault(size, threading.BoundedSemaphore(size))


def wait_for(run: Run, seconds: float) -> Run:
    """``run`` once it has finished, or as it is after ``seconds`` (at most RUNS_MAX_WAIT).

    At most RUNS_MAX_WAITERS requests of this process wait at once: a request that finds
    them all taken does not wait (the caller polls ``GET /runs/{id}/``). So slow runs hold
    at most that many of a web server's threads, whatever the callers ask for."""
    seconds = min(seconds, settings.RUNS_MAX_WAIT)
    if run.is_finished or seconds <= 0:
        return run
    slots = _waiter_slots()
    if not slots.acquire(blocking=False):
        return run
    try:
        deadline = time.monotonic() + seconds
        pause = 0.01
        while True:
            status = Run.objects.filter(pk=run.pk).values_list("status", flat=True).first()
            remaining = deadline - time.monotonic()
            if status in FINISHED_STATUSES or remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            # At most 100 ms late, at most ten queries a second per waiter.
            pause = min(pause * 1.5, 0.1)
    finally:
        slots.release()
    run.refresh_from_db()
    return run


# --- Cancelling (web) --------------------------------------------------------------------


class CannotCancel(Exception):
    """The run has already ended; the message says so."""


def may_cancel(user: AnyUser, run: Run) -> bool:
    """Whoever started the run (or set up its webhook), and members and admins, who may
    change workflows. A viewer may not stop the runs of others."""
    return run.triggered_by_id == user.pk or secret_access.may_edit(user)


def cancel(actor: AbstractBaseUser, run: Run) -> Run:
    """Cancel a queued or running run; a running one stops within RUNS_HEARTBEAT_SECONDS
    (its sandbox killed, its HTTP call aborted)."""
    if not may_cancel(actor, run):
        raise PermissionDenied(
            "You may cancel only runs you started: viewers cannot stop the runs of others."
        )
    fields = {
        "status": RunStatus.CANCELLED,
        "cancelled_by": actor,
        "error": f"Cancelled by {actor.get_username()}.",
        "queued_inputs": {},
    }
    for _ in range(3):  # it may start (or end) between reading it and cancelling it
        state = Run.objects.filter(pk=run.pk).values("status", "started_at").get()
        if state["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING):
            run.refresh_from_db()
            raise CannotCancel(f"This run has already ended ({run.get_status_display().lower()}).")
        now = timezone.now()
        duration = _milliseconds(now - state["started_at"]) if state["started_at"] else None
        # One statement, and only from the state just read: never a half-cancelled run.
        if Run.objects.filter(pk=run.pk, **state).update(
            finished_at=now, duration_ms=duration, **fields
        ):
            break
    else:
        raise CannotCancel("The run kept changing state; try again.")
    run.refresh_from_db()
    return run


# --- Claiming and ending (worker) --------------------------------------------------------


def claim(run_id: Any) -> Run | None:
    """Move the run from queued to running for this worker, if it is still queued and its
    organization has room; None otherwise (it ran, was cancelled, or waits for room)."""
    organization_id = (
        Run.objects.filter(pk=run_id, status=RunStatus.QUEUED)
        .values_list("organization_id", flat=True)
        .first()
    )
    if organization_id is None:
        return None
    now = timezone.now()
    with transaction.atomic():
        _lock_organization(organization_id)
        if not _has_room(organization_id):
            # It waits: the next run of the organization to end sends it again.
            Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(dispatched_at=None)
            return None
        claimed = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=now, heartbeat_at=now
        )
    if not claimed:
        return None
    return Run.objects.select_related("workflow", "action", "triggered_by", "webhook").get(
        pk=run_id
    )


def still_running(run: Run, **fields: Any) -> bool:
    """True if nobody cancelled the run (or declared it interrupted); marks it alive and
    sets ``fields`` in the same statement."""
    return bool(
        Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
            heartbeat_at=timezone.now(), **fields
        )
    )


def finish(run: Run, status: str, error: str = "", **fields: Any) -> None:
    """Record how the run ended, unless it was cancelled or declared interrupted meanwhile
    (then only its duration is added to what was recorded)."""
    now = timezone.now()
    duration_ms = _milliseconds(now - run.started_at) if run.started_at else None
    ended = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        status=status, error=error, finished_at=now, duration_ms=duration_ms, **fields
    )
    if not ended:
        Run.objects.filter(pk=run.pk, duration_ms__isnull=True).update(duration_ms=duration_ms)


def _milliseconds(delta: datetime.timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


class Heartbeat:
    """While a worker executes a run: mark it alive every RUNS_HEARTBEAT_SECONDS on a
    thread of its own, and cancel ``control`` once the run is no longer running (someone
    cancelled it, or the sweeper declared it interrupted)."""

    def __init__(self, run: Run, control: cancellation.Control) -> None:
        self._run = run
        self._control = control
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run.pk}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stop.wait(settings.RUNS_HEARTBEAT_SECONDS):
                try:
                    alive = still_running(self._run)
                except DatabaseError:
                    # Not reachable now: if it stays so, the sweeper declares the run
                    # interrupted and the next beat cancels it here.
                    logger.exception("Heartbeat of run %s failed.", self._run.pk)
                    close_old_connections()
                    continue
                if not alive:
                    self._control.cancel()
                    return
        finally:
            connection.close()  # this thread's own connection


# --- Sweeping (every worker, and reads) --------------------------------------------------


def reap(runs: Any = None) -> int:
    """Mark failed, "interrupted", the running runs (of ``runs``, a queryset, or all) whose
    heartbeat is older than RUNS_HEARTBEAT_TIMEOUT. Returns how many."""
    now = timezone.now()
    stale = (runs if runs is not None else Run.objects).filter(
        status=RunStatus.RUNNING,
        heartbeat_at__lt=now - datetime.timedelta(seconds=settings.RUNS_HEARTBEAT_TIMEOUT),
    )
    reaped = 0
    organizations = set()
    for run in stale.only("pk", "organization_id", "started_at", "heartbeat_at"):
        reaped += Run.objects.filter(
            pk=run.pk, status=RunStatus.RUNNING, heartbeat_at=run.heartbeat_at
        ).update(
            status=RunStatus.FAILED,
            error=INTERRUPTED,
            queued_inputs={},
            finished_at=now,
            duration_ms=_milliseconds(now - run.started_at),
        )
        organizations.add(run.organization_id)
    for organization_id in organizations:
        dispatch_next(organization_id)
    return reaped


def reaped_if_stale(run: Run) -> Run:
    """``run`` as it is, after marking it interrupted if its worker is gone (a reader
    learns it even when no worker sweeps)."""
    if run.status == RunStatus.RUNNING and reap(Run.objects.filter(pk=run.pk)):
        run.refresh_from_db()
    return run


def sweep() -> None:
    """Reap interrupted runs, and send again the queued runs whose message went unanswered
    (oldest first, as many as each organization has room for)."""
    reap()
    cutoff = timezone.now() - datetime.timedelta(seconds=settings.RUNS_REDISPATCH_SECONDS)
    unanswered = Run.objects.filter(status=RunStatus.QUEUED).filter(
        Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=cutoff)
    )
    for organization_id in set(unanswered.values_list("organization_id", flat=True)):
        room = settings.RUNS_PER_ORGANIZATION - _running_count(organization_id)
        if room > 0:
            oldest = unanswered.filter(organization_id=organization_id).order_by("created_at")
            dispatch(list(oldest.values_list("pk", flat=True)[:room]))


def start_sweeping() -> threading.Event:
    """Sweep every RUNS_SWEEP_SECONDS on a thread of this process (a worker's), until the
    returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        try:
            while True:
                try:
                    sweep()
                except Exception:
                    logger.exception("Sweeping runs failed.")
                    close_old_connections()
                if stop.wait(settings.RUNS_SWEEP_SECONDS):
                    return
        finally:
            connection.close()

    threading.Thread(target=loop, name="runs-sweeper", daemon=True).start()
    return stop
