"""Reading the builder's forms into action configs, and errors back onto fields.

The builder posts repeated rows (``header-name``/``header-value``, …) rather than Django
formsets, so rows can be added with "+ Add Header" without a round trip. The config goes
to ``workflows.services``, whose validation (``workflows.configs``) names fields as
``config.headers[1].value``; ``errors_by_field`` maps those messages back to the inputs.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from django.core.exceptions import ValidationError
from django.http import QueryDict

# Row kinds: (form prefix, config path).
ROW_KINDS = {
    "query": "query",
    "header": "headers",
    "field": "body.fields",
    "variable": "variables",
}
_FIELD_PATH = re.compile(r"^(config\.[A-Za-z_.]+(?:\[\d+\])?(?:\.[a-z]+)?): (.*)$", re.DOTALL)
# Fields the builder prints an error beside. Any other message (a list with too many rows,
# a bad method) also goes to the form's summary, so no refusal is silent.
_SHOWN_BESIDE_FIELD = re.compile(r"^config\.(url|body\.raw|code|[a-z.]+\[\d+\]\.(name|value))$")


def _rows(data: QueryDict, prefix: str) -> list[dict[str, str]]:
    names = data.getlist(f"{prefix}-name")
    values = data.getlist(f"{prefix}-value")
    rows = []
    for name, value in zip(names, values, strict=False):
        if name.strip() or value.strip():  # a row left empty is not a row
            rows.append({"name": name.strip(), "value": value})
    return rows


def config_from_post(action_type: str, data: QueryDict) -> dict[str, Any]:
    if action_type == "send_api_request":
        body_type = data.get("body-type", "none")
        body: dict[str, Any] = {"type": body_type}
        if body_type == "fields":
            body["fields"] = _rows(data, "field")
        elif body_type == "raw":
            body["raw"] = data.get("raw", "")
        return {
            "method": data.get("method", "GET"),
            "url": data.get("url", "").strip(),
            "query": _rows(data, "query"),
            "headers": _rows(data, "header"),
            "body": body,
        }
    return {
        "language": data.get("language", "python"),
        "code": data.get("code", ""),
        "variables": _rows(data, "variable"),
    }


def errors_by_field(error: ValidationError) -> dict[str, list[str]]:
    """``{"config.headers[1].value": [...], "name": [...], "form": [...]}``."""
    errors: dict[str, list[str]] = defaultdict(list)
    for field, messages in error.message_dict.items():
        for message in messages:
            match = _FIELD_PATH.match(message) if field == "config" else None
            if match:
                errors[match.group(1)].append(match.group(2))
                if not _SHOWN_BESIDE_FIELD.match(match.group(1)):
                    errors["form"].append(message)
            else:
                errors[field if field != "config" else "form"].append(message)
    return dict(errors)


def rows_for_display(config: dict[str, Any], path: str) -> list[dict[str, str]]:
    """The rows at ``path`` (``headers``, ``body.fields``…) of a config."""
    value: Any = config
    for part in path.split("."):
        value = value.get(part, {}) if isinstance(value, dict) else {}
    rows = list(value) if isinstance(value, list) else []
    return rows
