"""Every key write leaves one audit event per change, and no event holds a value."""

from __future__ import annotations

import json

import pytest

from secretsapp import services
from secretsapp.models import AuditAction, AuditEvent
from tests.conftest import RESTRICTED_VALUE, TEAM_VALUE, Personas

NEW_VALUE = "rotated-value-Q9!never-logged"


def _actions() -> list[str]:
    return list(AuditEvent.objects.order_by("id").values_list("action", flat=True))


def test_every_key_write_is_audited_without_values(personas: Personas):
    admin, key = personas.admin, personas.restricted_key
    assert _actions() == [AuditAction.CREATED, AuditAction.CREATED]

    services.rename_secret_key(admin, key, "Stripe production")
    services.update_secret_value(admin, key, NEW_VALUE)
    services.change_secret_access(admin, key, access_level="team")
    services.change_secret_access(admin, key, grants=[])
    services.delete_secret_key(admin, key)

    assert _actions()[2:] == [
        AuditAction.RENAMED,
        AuditAction.VALUE_UPDATED,
        AuditAction.ACCESS_CHANGED,
        AuditAction.GRANTS_CHANGED,
        AuditAction.DELETED,
    ]
    events = list(AuditEvent.objects.filter(secret_key_id=key.pk).order_by("id"))
    assert {event.actor for event in events} == {admin}
    assert events[1].changes == {"name": {"from": "Stripe live", "to": "Stripe production"}}
    assert events[1].secret_key_name == "Stripe production"
    assert events[2].changes == {"version": {"from": 1, "to": 2}}
    assert events[3].changes == {"access": {"from": "restricted", "to": "team"}}
    assert {grant["principal_name"] for grant in events[4].changes["removed"]} == {
        "bob-use",
        "carol-manage",
    }
    dump = json.dumps(list(AuditEvent.objects.values()), default=str)
    for value in (RESTRICTED_VALUE, TEAM_VALUE, NEW_VALUE):
        assert value not in dump


def test_one_patch_with_several_changes_gives_one_event_each(personas: Personas):
    services.update_secret_key(
        personas.admin, personas.team_key, name="Slack alerts", value=NEW_VALUE, access_level="team"
    )
    # access unchanged: no event for it
    assert _actions()[2:] == [AuditAction.RENAMED, AuditAction.VALUE_UPDATED]


def test_no_op_writes_leave_no_events(personas: Personas):
    key = personas.restricted_key
    services.update_secret_key(personas.admin, key, name=key.name, grants=key.grants)
    assert len(_actions()) == 2


def test_audit_events_are_append_only(personas: Personas):
    event = AuditEvent.objects.first()
    event.secret_key_name = "tampered"
    with pytest.raises(ValueError, match="append-only"):
        event.save()


def test_events_outlive_deleted_keys_and_users(personas: Personas):
    key_id = personas.restricted_key.pk
    services.delete_secret_key(personas.member_manage, personas.restricted_key)
    personas.member_manage.delete()
    event = AuditEvent.objects.get(action=AuditAction.DELETED)
    assert event.secret_key_id == key_id
    assert event.actor is None
    assert event.actor_name == "carol-manage"
