"""``user.has_perm(perm, workflow)`` gives the answers of access: changing a workflow needs
Use on every key it references, viewing needs membership of its organization."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.conftest import PERSONA_NAMES, Personas, http_action
from workflows import access, services
from workflows.models import Run, Workflow

# Who may change each workflow, written out: bob-use, carol-manage and the admin may Use
# the Restricted key; every member may Use the Team key; viewers change nothing; the
# outsider belongs to another organization.
MAY_CHANGE = {
    "restricted": {"admin", "member_use", "member_manage"},
    "team": {"admin", "member_use", "member_manage", "member_nothing"},
    "no key": {"admin", "member_use", "member_manage", "member_nothing"},
}
MAY_VIEW = {"admin", "member_use", "member_manage", "member_nothing", "viewer"}


@pytest.fixture
def workflows(personas: Personas) -> dict[str, Workflow]:
    made = {}
    for kind, key in [
        ("restricted", personas.restricted_key),
        ("team", personas.team_key),
        ("no key", None),
    ]:
        workflow = services.create_workflow(personas.admin, name=f"With {kind}")
        headers = [{"name": "X-Key", "value": f"{{{{secret:{key.pk}}}}}"}] if key else []
        services.create_action(
            personas.admin,
            workflow,
            name="Call",
            action_type="send_api_request",
            config=http_action(headers=headers),
        )
        made[kind] = workflow
    return made


@pytest.mark.parametrize("kind", list(MAY_CHANGE))
@pytest.mark.parametrize("persona", PERSONA_NAMES)
def test_has_perm_on_a_workflow_and_its_actions_is_access(
    personas: Personas, workflows: dict[str, Workflow], persona: str, kind: str
):
    user, workflow = personas.by_name(persona), workflows[kind]
    action = workflow.actions.get()
    run = Run.objects.create(
        organization=workflow.organization,
        workflow=workflow,
        status="succeeded",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        duration_ms=1,
    )
    may_change = persona in MAY_CHANGE[kind]
    assert access.may_change(user, workflow) is may_change
    for perm in ("workflows.change_workflow", "workflows.delete_workflow"):
        assert user.has_perm(perm, workflow) is may_change
    for perm in ("workflows.change_action", "workflows.delete_action"):
        assert user.has_perm(perm, action) is may_change
    assert user.has_perm("workflows.view_workflow", workflow) is (persona in MAY_VIEW)
    assert user.has_perm("workflows.view_run", run) is (persona in MAY_VIEW)
    # Not a question of this object, or no object: other backends decide (ModelBackend:
    # these users hold no model-wide permission).
    assert user.has_perm("workflows.view_run", workflow) is False
    assert user.has_perm("workflows.change_workflow") is False


def test_inactive_users_have_no_workflow_permission(
    personas: Personas, workflows: dict[str, Workflow]
):
    personas.admin.is_active = False
    personas.admin.save()
    assert not personas.admin.has_perm("workflows.change_workflow", workflows["no key"])
    assert not personas.admin.has_perm("workflows.view_workflow", workflows["no key"])
