"""Celery tasks: what `celery -A config worker` executes (see ``workflows.runs``)."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.db import close_old_connections

from workflows import execution, runs

_sweeper: dict[str, object] = {}


@shared_task(bind=True, ignore_result=True)
def execute_run(self, run_id: str) -> None:
    """Execute the queued run ``run_id`` if this worker claims it (at most once)."""
    if not self.request.is_eager:
        # The connection is kept from run to run (CELERY_DB_REUSE_MAX): drop it if it
        # broke or outlived CONN_MAX_AGE, as Django does at the start of a request.
        close_old_connections()
    # In eager mode (the tests outside tests/queue) the run executes inside the caller:
    # nothing else could cancel it meanwhile, and no heartbeat thread is started.
    execution.execute(run_id, supervised=not self.request.is_eager)


@worker_ready.connect
def _start_sweeping(**kwargs: object) -> None:
    """Every worker sweeps: interrupted runs are marked failed, unanswered ones resent."""
    _sweeper["stop"] = runs.start_sweeping()


@worker_shutdown.connect
def _stop_sweeping(**kwargs: object) -> None:
    stop = _sweeper.pop("stop", None)
    if stop is not None:
        stop.set()
