from __future__ import annotations

from secretsapp import access
from secretsapp.models import get_membership


def membership(request) -> dict:
    """The signed-in user's membership (organization and role) for the layout, and
    whether it shows the admins' links (access answers, as for the pages they lead to)."""
    user = getattr(request, "user", None)
    return {"membership": get_membership(user), "is_organization_admin": access.is_admin(user)}
