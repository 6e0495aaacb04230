"""The JSON parser of /api/v1/ (its own module: DRF imports it while loading its views)."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import exceptions, parsers

# No payload of this API nests anywhere near this deep; past it, recursive code further on
# (validation, redaction, the JSON encoder) would run out of stack and answer 500.
MAX_JSON_DEPTH = 100
_UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus: JSON nested deeper than ``MAX_JSON_DEPTH`` and strings
    holding unpaired surrogates are a 400 (``ParseError``) instead of a 500.

    Python's json module raises ``RecursionError`` on deep nesting (100,000 levels of
    ``[`` is 200 KB), and a ``\\ud800`` escape is valid JSON but not text: no UTF-8
    encoder — the database's, the cipher's, the password hasher's — can write it.
    """

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError(_too_deep()) from None
        _check_parsed(data)
        return data


def _too_deep() -> str:
    return f"JSON parse error - nested deeper than {MAX_JSON_DEPTH} levels."


def _check_parsed(data: Any) -> None:
    """Walk the parsed document without recursion: depth, and every key and string."""
    stack: list[tuple[Any, int, tuple]] = [(data, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            children = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            if isinstance(value, str) and _UNPAIRED_SURROGATE.search(value):
                raise exceptions.ParseError(
                    f"JSON parse error - {_json_path(path)} holds an unpaired surrogate "
                    "(\\ud800-\\udfff), which is not text."
                )
            continue
        if depth > MAX_JSON_DEPTH:
            raise exceptions.ParseError(_too_deep())
        for key, child in children:
            if isinstance(key, str) and _UNPAIRED_SURROGATE.search(key):
                raise exceptions.ParseError(
                    f"JSON parse error - a key in {_json_path(path)} holds an unpaired "
                    "surrogate (\\ud800-\\udfff), which is not text."
                )
            stack.append((child, depth + 1, (*path, key)))


def _json_path(path: tuple) -> str:
    """``config.headers[0].value`` — field names as the API's errors spell them."""
    text = ""
    for key in path:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else key
    return text or "the body"
