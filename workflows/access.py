"""Finding workflows, actions and runs for a user, and asking ``secretsapp.access`` what
they may do with them.

Every member of the organization (viewers included) sees and runs its workflows. Admins
and members change a workflow while they may Use every key it references; a run's inputs,
outputs and errors are read by those who may Use every key it used. A foreign or unknown
object is a 404, a visible one without the right a 403. The decisions are
``secretsapp.access``'s; this module gathers the keys they are about.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.http import Http404

from secretsapp import access as secret_access
from secretsapp.access import as_id, require_membership
from secretsapp.models import Membership
from workflows.models import Action, Run, SecretReference, Workflow

if TYPE_CHECKING:
    from secretsapp.access import AnyUser


def require_edit(user: AnyUser, organization_id: int | None = None) -> Membership:
    """Admins and members edit workflows (of ``organization_id``, when given; others'
    are a 404); viewers get a 403."""
    membership = require_membership(user, organization_id)
    if not secret_access.may_edit(user):
        raise PermissionDenied("Viewers can run workflows but not change them.")
    return membership


def get_workflow_for_user(user: AnyUser, workflow_id: object, need: str = "view") -> Workflow:
    membership = require_membership(user)
    workflow_id = as_id(workflow_id)
    if workflow_id is None:
        raise Http404("No such workflow.")
    try:
        workflow = Workflow.objects.get(pk=workflow_id, organization_id=membership.organization_id)
    except Workflow.DoesNotExist:
        raise Http404("No such workflow.") from None
    if need == "edit":
        require_edit(user)
    return workflow


def get_action_for_user(
    user: AnyUser, action_id: object, need: str = "view", workflow_id: object = None
) -> Action:
    """``workflow_id`` (pages address an action through its workflow): the action must be
    one of that workflow's, or it is a 404 — before any 403, so a foreign workflow id in
    the URL is never acted upon nor answered differently from an unknown one."""
    membership = require_membership(user)
    action_id = as_id(action_id)
    if action_id is None:
        raise Http404("No such action.")
    actions = Action.objects.select_related("workflow").filter(
        workflow__organization_id=membership.organization_id
    )
    if workflow_id is not None:
        actions = actions.filter(workflow_id=as_id(workflow_id))
    try:
        action = actions.get(pk=action_id)
    except Action.DoesNotExist:
        raise Http404("No such action.") from None
    if need == "edit":
        require_edit(user)
    return action


def get_run_for_user(user: AnyUser, run_id: object) -> Run:
    membership = require_membership(user)
    try:
        run_uuid = uuid.UUID(str(run_id))
        return Run.objects.prefetch_related("steps").get(
            pk=run_uuid, organization_id=membership.organization_id
        )
    except (ValueError, Run.DoesNotExist):
        raise Http404("No such run.") from None


def workflow_secret_ids(workflow: Workflow) -> set[uuid.UUID]:
    """The keys the workflow's actions reference, from the where-used index: one query."""
    return set(
        SecretReference.objects.filter(action__workflow_id=workflow.pk).values_list(
            "secret_key_id", flat=True
        )
    )


def require_change(user: AnyUser, workflow: Workflow) -> None:
    """403 unless ``user`` may change the workflow: Use on every key it references. Call
    it with the workflow row locked, so that a concurrent save cannot slip a key in
    meanwhile; the keys a change adds are checked by the save itself (400 per field)."""
    secret_access.require_workflow_change(user, workflow, workflow_secret_ids(workflow))


def may_change(user: AnyUser, workflow: Workflow) -> bool:
    return secret_access.may_change_workflow(
        user, workflow.organization_id, workflow_secret_ids(workflow)
    )


def change_refusal(user: AnyUser, workflow: Workflow) -> str | None:
    """Why an editor may not change the workflow, naming whom to ask; None when they may
    (and for viewers, whom the pages tell they are viewers)."""
    referenced = workflow_secret_ids(workflow)
    if not secret_access.may_edit(user) or secret_access.may_change_workflow(
        user, workflow.organization_id, referenced
    ):
        return None
    return secret_access.workflow_change_refusal(workflow, referenced)
