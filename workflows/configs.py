"""Validation of action configs (see "Action config" in DESIGN.md).

``clean_config`` returns the config in its normal form and every reference in it, or
raises ``ValidationError`` with one message per bad field, each naming the field
(``config.headers[1].value``), so forms and the API can show it beside the field.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from django.core.exceptions import ValidationError

from workflows.http import METHODS, TOKEN_PATTERN
from workflows.references import (
    IDENTIFIER,
    InvalidReference,
    Reference,
    parse,
    with_references_replaced,
)
from workflows.sandbox import LANGUAGES

BODY_TYPES = ("none", "fields", "raw")
MAX_URL = 2_048
MAX_ROWS = 100
MAX_ROW_NAME = 256
MAX_ROW_VALUE = 8_192
MAX_RAW_BODY = 1_048_576
MAX_CODE = 100_000
# NUL cannot be stored in PostgreSQL's jsonb (a 500 there), nor sent in a URL or header;
# unpaired surrogates are not text at all. Pages can post NUL, the API both.
UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


class _Collector:
    """Gathers errors and references while walking a config."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.references: list[tuple[str, Reference]] = []

    def error(self, field: str, message: str) -> None:
        self.errors.append(f"{field}: {message}")

    def text(
        self, value: Any, field: str, *, max_length: int, required: bool = False
    ) -> str | None:
        if not isinstance(value, str):
            self.error(field, "must be text.")
            return None
        if required and not value.strip():
            self.error(field, "is required.")
            return None
        if len(value) > max_length:
            self.error(field, f"must be at most {max_length:,} characters.")
            return None
        if UNSTORABLE_CHARACTERS.search(value):
            self.error(field, "cannot contain NUL characters or unpaired surrogates.")
            return None
        return value

    def templated(self, value: Any, field: str, *, max_length: int, required: bool = False):
        text = self.text(value, field, max_length=max_length, required=required)
        if text is None:
            return None
        try:
            self.references += [(field, reference) for reference in parse(text, field)]
        except InvalidReference as error:
            self.errors.append(str(error))
            return None
        return text

    def rows(self, value: Any, field: str, *, header_names: bool = False) -> list[dict]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(field, "must be a list of {name, value} rows.")
            return []
        if len(value) > MAX_ROWS:
            self.error(field, f"must have at most {MAX_ROWS} rows.")
            return []
        rows = []
        for index, row in enumerate(value):
            row_field = f"{field}[{index}]"
            if not isinstance(row, dict) or set(row) - {"name", "value"}:
                self.error(row_field, "must be an object with “name” and “value”.")
                continue
            name = self.text(
                row.get("name"), f"{row_field}.name", max_length=MAX_ROW_NAME, required=True
            )
            if name is not None and header_names and not TOKEN_PATTERN.fullmatch(name):
                self.error(f"{row_field}.name", "is not a valid header name.")
            row_value = self.templated(
                row.get("value", ""), f"{row_field}.value", max_length=MAX_ROW_VALUE
            )
            if name is not None and row_value is not None:
                rows.append({"name": name, "value": row_value})
        return rows


def _unknown(collector: _Collector, config: dict, allowed: set[str], field: str) -> None:
    for key in sorted(set(config) - allowed):
        collector.error(f"{field}.{key}", "is not a known setting.")


def _send_api_request(config: dict, collector: _Collector) -> dict:
    _unknown(collector, config, {"method", "url", "query", "headers", "body"}, "config")
    method = config.get("method", "GET")
    if method not in METHODS:
        collector.error("config.method", f"must be one of {', '.join(METHODS)}.")
    # An empty URL is a draft: it saves, and running it fails saying so.
    url = collector.templated(config.get("url", ""), "config.url", max_length=MAX_URL)
    # A URL may start with a reference (a base URL input); otherwise it must be http(s).
    if url and not url.startswith("{{") and not re.match(r"https?://[^/\s]", url, re.IGNORECASE):
        collector.error("config.url", "must start with http:// or https://.")
    body = config.get("body") or {"type": "none"}
    normalized_body: dict[str, Any] = {"type": "none"}
    if not isinstance(body, dict):
        collector.error("config.body", "must be an object with a “type”.")
    else:
        _unknown(collector, body, {"type", "fields", "raw"}, "config.body")
        body_type = body.get("type", "none")
        if body_type not in BODY_TYPES:
            collector.error("config.body.type", f"must be one of {', '.join(BODY_TYPES)}.")
        elif body_type == "fields":
            normalized_body = {
                "type": "fields",
                "fields": collector.rows(body.get("fields"), "config.body.fields"),
            }
        elif body_type == "raw":
            raw = collector.templated(
                body.get("raw", ""), "config.body.raw", max_length=MAX_RAW_BODY
            )
            if raw is not None:
                _check_raw_json(raw, collector)
                normalized_body = {"type": "raw", "raw": raw}
    return {
        "method": method,
        "url": url or "",
        "query": collector.rows(config.get("query"), "config.query"),
        "headers": collector.rows(config.get("headers"), "config.headers", header_names=True),
        "body": normalized_body,
    }


def _check_raw_json(raw: str, collector: _Collector) -> None:
    """The raw body must be JSON once its references are filled in (with a stand-in)."""
    if not raw.strip():
        return
    try:
        json.loads(with_references_replaced(raw, "0"))
    except ValueError as error:
        collector.error("config.body.raw", f"is not valid JSON ({error.msg}, line {error.lineno}).")
    except RecursionError:
        # json raises it past Python's recursion limit (a few hundred "[" are enough).
        collector.error("config.body.raw", "is nested too deeply to be checked as JSON.")


def _run_code(config: dict, collector: _Collector) -> dict:
    _unknown(collector, config, {"language", "code", "variables"}, "config")
    language = config.get("language")
    if language not in LANGUAGES:
        collector.error("config.language", f"must be one of {', '.join(LANGUAGES)}.")
    code = collector.text(config.get("code"), "config.code", max_length=MAX_CODE, required=True)
    if code is not None and "{{secret:" in code:
        # Code never holds a value: it reads a code variable that references the key.
        collector.error("config.code", "cannot reference a secret key; add a code variable for it.")
    variables = collector.rows(config.get("variables"), "config.variables")
    names = [variable["name"] for variable in variables]
    for index, name in enumerate(names):
        if not IDENTIFIER.fullmatch(name):
            collector.error(f"config.variables[{index}].name", "must be a valid identifier.")
        elif names.index(name) != index:
            collector.error(f"config.variables[{index}].name", f"“{name}” is used twice.")
    return {"language": language, "code": code or "", "variables": variables}


def clean_config(action_type: str, config: Any) -> tuple[dict, list[tuple[str, Reference]]]:
    """The normalized config and its (field, reference) pairs; ValidationError otherwise."""
    collector = _Collector()
    if not isinstance(config, dict):
        raise ValidationError({"config": ["must be an object."]})
    if action_type == "send_api_request":
        normalized = _send_api_request(config, collector)
    elif action_type == "run_code":
        normalized = _run_code(config, collector)
    else:
        raise ValidationError({"type": ["must be send_api_request or run_code."]})
    if collector.errors:
        raise ValidationError({"config": collector.errors})
    return normalized, collector.references


# Stored configs up to this size have their references kept (by their JSON text).
_CACHED_CONFIG_SIZE = 65_536


def stored_references(action_type: str, config: Any) -> tuple[tuple[str, Reference], ...]:
    """The (field, reference) pairs of a stored config, as ``clean_config`` finds them.

    Runs parse the same configs again and again: a config of 50 references costs 250 µs
    to clean and 25 µs to serialize, so the result is kept for recent configs, keyed by
    their text (which holds references, never values)."""
    text = json.dumps(config)
    if len(text) > _CACHED_CONFIG_SIZE:
        return tuple(clean_config(action_type, config)[1])
    return _references_of_text(action_type, text)


@functools.lru_cache(maxsize=1024)
def _references_of_text(action_type: str, text: str) -> tuple[tuple[str, Reference], ...]:
    # A config that does not validate raises, and exceptions are not cached.
    return tuple(clean_config(action_type, json.loads(text))[1])
