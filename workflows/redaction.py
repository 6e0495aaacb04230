"""Redaction: the one function that takes every secret value of a run out of what is kept.

Every output, error and log of a run goes through ``Redactor.redact`` before it is stored
or returned. A value is replaced, as ``[redacted:<key name>]``, in its plain form and in
the encodings it commonly travels in: URL-encoded, JSON-escaped, HTML-escaped and base64.
For base64 the value may sit at any offset of a longer encoded text (``user:value`` in a
Basic auth header, a value inside an encoded JSON document), so the encoded value is
computed for each of the three alignments, leaving out the characters that depend on
the unknown bytes around it.

All forms of all keys go into one Aho-Corasick automaton, so a text is scanned once,
whatever the number of keys.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick_rs

# Encoded fragments shorter than this would match ordinary text; the plain value is
# always redacted, whatever its length.
MIN_FRAGMENT = 6


def _base64_fragments(data: bytes) -> set[str]:
    fragments = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        fragments.add(encode(data).decode())  # the value encoded on its own, padding included
        for shift in range(3):
            encoded = encode(b"\0" * shift + data).decode()
            # Characters that mix in bytes before the value ...
            start = {0: 0, 1: 2, 2: 3}[shift]
            # ... or after it (a last, partial group) depend on the surrounding text.
            end = len(encoded) if (shift + len(data)) % 3 == 0 else len(encoded) - 4
            fragments.add(encoded[start:end])
    return fragments


def encoded_forms(value: str) -> set[str]:
    """The value and the forms it is found in when it leaves a request or a program."""
    json_escaped = json.dumps(value)[1:-1]
    # Texts the value is written as; each may then travel base64-encoded (a JSON document
    # in a JWT or a data URL holds the value JSON-escaped).
    texts = {value, json_escaped, json.dumps(value, ensure_ascii=False)[1:-1]}
    forms = {
        *texts,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json_escaped.replace("/", "\\/"),
        html.escape(value),
        html.escape(value, quote=False),
        *(fragment for text in texts for fragment in _base64_fragments(text.encode())),
    }
    return {form for form in forms if len(form) >= MIN_FRAGMENT} | {value}


class Redactor:
    """Built once per run from the (name, value) pairs of the keys it used."""

    def __init__(self, secrets: Iterable[tuple[str, str]]) -> None:
        replacements: dict[str, str] = {}
        for name, value in secrets:
            if value:
                for form in encoded_forms(value):
                    replacements.setdefault(form, f"[redacted:{name}]")
        self._forms = list(replacements)
        self._replacements = [replacements[form] for form in self._forms]
        self._empty = not self._forms
        if not self._empty:
            self._automaton = ahocorasick_rs.AhoCorasick(
                self._forms, matchkind=ahocorasick_rs.MatchKind.LeftmostLongest
            )

    def redact_text(self, text: str) -> str:
        if self._empty or not text:
            return text
        pieces: list[str] = []
        position = 0
        # Leftmost-longest, non-overlapping matches, in one pass over the text.
        for index, start, end in self._automaton.find_matches_as_indexes(text):
            pieces.append(text[position:start])
            pieces.append(self._replacements[index])
            position = end
        if not pieces:
            return text
        pieces.append(text[position:])
        return "".join(pieces)

    def redact(self, value: Any) -> Any:
        """Redact every string in a JSON-like value (keys included)."""
        if self._empty:
            return value
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self.redact_text(str(key)): self.redact(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact(item) for item in value]
        return value
