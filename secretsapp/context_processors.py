from __future__ import annotations

from secretsapp.models import get_membership


def membership(request) -> dict:
    """The signed-in user's membership (organization and role) for the layout."""
    return {"membership": get_membership(getattr(request, "user", None))}
