"""Runs recorded before placeholders named keys by id are rewritten by the migration."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from secretsapp import audit
from tests.conftest import Personas
from workflows import services
from workflows.models import Run, RunStep

BEFORE = [("workflows", "0001_initial")]
AFTER = [("workflows", "0002_run_secret_key_ids")]


def _migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.mark.django_db(transaction=True)
def test_old_runs_get_their_keys_and_placeholders_by_id(personas: Personas):
    workflow = services.create_workflow(personas.member_use, name="Old runs")
    run = Run.objects.create(
        organization=personas.organization,
        workflow=workflow,
        status="succeeded",
        triggered_by=personas.member_use,
        inputs={"note": "[redacted:Stripe live]"},
        started_at=timezone.now(),
        finished_at=timezone.now(),
        duration_ms=1,
    )
    # As the executor stored them before: the key's name in the placeholder.
    step = RunStep.objects.create(
        run=run,
        position=1,
        name="Echo",
        type="send_api_request",
        status="failed",
        output={"[redacted:Stripe live]": ["[redacted:Stripe live] and [redacted:Gone]"]},
        error="bad [redacted:Slack webhook]",
    )
    audit.record_key_uses(
        personas.member_use,
        personas.organization.pk,
        {personas.restricted_key.pk: "Stripe live"},
        run.pk,
        timezone.now(),
    )
    restricted, team = personas.restricted_key.pk, personas.team_key.pk
    try:
        _migrate(BEFORE)
        _migrate(AFTER)
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    run.refresh_from_db()
    step.refresh_from_db()
    # The keys come from the run's `used` events; other names from the organization's
    # keys (a key loaded but not used); a name that matches nothing loses it.
    assert run.secret_key_ids == [str(restricted)]
    assert run.inputs == {"note": f"[redacted:{restricted}]"}
    assert step.output == {f"[redacted:{restricted}]": [f"[redacted:{restricted}] and [redacted]"]}
    assert step.error == f"bad [redacted:{team}]"
