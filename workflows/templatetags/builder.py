from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def get_item(mapping: Any, key: str) -> Any:
    """``errors|get_item:"config.headers[0].value"``: keys with dots and brackets."""
    if isinstance(mapping, dict):
        return mapping.get(key, [])
    return []
