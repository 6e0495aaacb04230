"""``user.has_perm(perm, secret_key)`` answered by ``secretsapp.access``.

Grants are stored as django-guardian object permissions, but a grant is only one of the
rules: Team access gives every member Use, admins and a key's creator Manage, viewers are
capped at Use, and another organization's key is nobody's business. Guardian's own
backend reads the grant rows alone, so this backend replaces it and asks ``access``, the
one place that decides. Permissions of a ``SecretKey`` object:

==============================  ========  ================================================
permission                      answer    why
==============================  ========  ================================================
``secretsapp.use_secretkey``    Use       reference the key and have it resolved at runs
``secretsapp.view_secretkey``   Use       a key is visible exactly to those who may Use it
``secretsapp.manage_secretkey`` Manage    rename, change value, access and grants, delete
``secretsapp.change_secretkey`` Manage    the same rights under Django's name
``secretsapp.delete_secretkey`` Manage    deleting is part of Manage
anything else                   False     e.g. ``add_secretkey`` has no per-object meaning
==============================  ========  ================================================

Permission names carry the app label, as Django's own backends expect. For any other
object, or none, the answer is False, so the other backends (``ModelBackend``'s
model-level permissions) decide alone. Inactive and signed-out users get False (access
gives them nothing); active superusers never reach a backend, Django grants them
everything first, which is also access's answer. ``has_perm`` never raises ``Http404`` or
``PermissionDenied``: it costs one query (``access.can_use``/``can_manage``), none for an
unknown permission or object.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from django.contrib.auth.backends import BaseBackend

from secretsapp import access
from secretsapp.models import SecretKey

if TYPE_CHECKING:
    from django.db.models import Model
    from django.http import HttpRequest

    from secretsapp.access import AnyUser

Right = Literal["use", "manage"]

PERMISSIONS: dict[str, Right] = {
    "secretsapp.use_secretkey": "use",
    "secretsapp.view_secretkey": "use",
    "secretsapp.manage_secretkey": "manage",
    "secretsapp.change_secretkey": "manage",
    "secretsapp.delete_secretkey": "manage",
}


class AccessBackend(BaseBackend):
    """Object permissions on secret keys, from ``secretsapp.access`` (see the module)."""

    def authenticate(self, request: HttpRequest | None, **credentials: object) -> None:
        return None  # answers permission questions only; ModelBackend signs people in

    def has_perm(self, user_obj: AnyUser, perm: str, obj: Model | None = None) -> bool:
        right = PERMISSIONS.get(perm)
        if right is None or not isinstance(obj, SecretKey):
            return False
        # Always asked afresh: a key read for another user carries that user's annotations.
        if right == "manage":
            return access.can_manage(user_obj, obj)
        return access.can_use(user_obj, obj)

    def get_all_permissions(self, user_obj: AnyUser, obj: Model | None = None) -> set[str]:
        """What ``user.get_all_permissions(secret_key)`` adds, in one query."""
        if not isinstance(obj, SecretKey):
            return set()
        rights = access.rights(user_obj, obj)
        return {perm for perm, right in PERMISSIONS.items() if right in rights}
