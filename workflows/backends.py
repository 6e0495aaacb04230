"""``user.has_perm(perm, workflow)`` answered by ``workflows.access`` (which asks
``secretsapp.access``, the one place that decides), as ``secretsapp.backends`` does for keys.

=================================================  ==========================================
permission                                          answer
=================================================  ==========================================
``workflows.view_workflow``, ``workflows.view_run``  a member of the object's organization
``workflows.change_workflow``, ``delete_workflow``   may change it: an editor who may Use
                                                     every key it references (no confused
                                                     deputy)
``workflows.change_action``, ``delete_action``       may change the action's workflow
anything else                                        False
=================================================  ==========================================

Another organization's object, an inactive or signed-out user, or an object of another kind:
False, so the other backends decide. It never raises; a change question costs two queries
(the workflow's keys, the user's rights on them), a view question none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.backends import BaseBackend

from secretsapp import access as secret_access
from workflows import access
from workflows.models import Action, Run, Workflow

if TYPE_CHECKING:
    from django.db.models import Model
    from django.http import HttpRequest

    from secretsapp.access import AnyUser

VIEW = {"workflows.view_workflow": Workflow, "workflows.view_run": Run}
CHANGE = {
    "workflows.change_workflow": Workflow,
    "workflows.delete_workflow": Workflow,
    "workflows.change_action": Action,
    "workflows.delete_action": Action,
}


class WorkflowAccessBackend(BaseBackend):
    """Object permissions on workflows, actions and runs (see the module)."""

    def authenticate(self, request: HttpRequest | None, **credentials: object) -> None:
        return None  # answers permission questions only

    def has_perm(self, user_obj: AnyUser, perm: str, obj: Model | None = None) -> bool:
        if perm in VIEW and isinstance(obj, VIEW[perm]):
            return secret_access.is_member(user_obj, obj.organization_id)
        if perm in CHANGE and isinstance(obj, CHANGE[perm]):
            workflow = obj.workflow if isinstance(obj, Action) else obj
            return access.may_change(user_obj, workflow)
        return False

    def get_all_permissions(self, user_obj: AnyUser, obj: Model | None = None) -> set[str]:
        return {
            perm
            for perm, kind in (VIEW | CHANGE).items()
            if isinstance(obj, kind) and self.has_perm(user_obj, perm, obj)
        }
