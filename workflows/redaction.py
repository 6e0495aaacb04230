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

Log records are redacted too: while a run holds decrypted values (``redacting_logs``),
every record created in that context, by the app or by a library, is redacted when it is
made, whatever its logger, level or handler. httpx, for one, logs each request's URL at
INFO, and a URL may carry a value; levels in LOGGING alone would not survive a logger
turned up to DEBUG.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import logging
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick_rs
import httpx

# Encoded fragments shorter than this would match ordinary text; the plain value is
# always redacted, whatever its length.
MIN_FRAGMENT = 6
# Values whose encoded forms are kept (about 5 KB each).
FORMS_CACHE_SIZE = 2048
# Redactors kept for the key sets of recent runs.
REDACTORS_CACHE_SIZE = 64


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


def _string_literal(value: str, quote_character: str) -> str:
    """The value inside quotes as a program prints it: backslash escapes (JavaScript's
    util.inspect quotes with ', " or ` and escapes only that one)."""
    text = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    text = text.replace("\t", "\\t")
    return text.replace(quote_character, "\\" + quote_character) if quote_character else text


@functools.lru_cache(maxsize=FORMS_CACHE_SIZE)
def encoded_forms(value: str) -> frozenset[str]:
    """The value and the forms it is found in when it leaves a request or a program.

    Kept for the most recently used values: computing them is most of what a run spends
    per key (20 µs each). The cache lives in the process that already holds the key that
    decrypts every value (FIELD_ENCRYPTION_KEY), and is never written anywhere."""
    json_escaped = json.dumps(value)[1:-1]
    # An HTTP server reads header bytes as ISO-8859-1 (Python's http.server does), so a
    # target echoing a header sends back the UTF-8 of a non-ASCII value as mojibake.
    mojibake = value.encode("utf-8").decode("latin-1")
    # Texts the value is written as: JSON-escaped, or as a string literal by code that
    # prints a dict, raises KeyError(value) or console.logs an object (Python's repr,
    # JavaScript's util.inspect). Each text may then travel URL-encoded, HTML-escaped or
    # base64-encoded (a JSON body echoed in a query string, a JSON document in a JWT).
    texts = {
        value,
        json_escaped,
        json.dumps(value, ensure_ascii=False)[1:-1],
        repr(value)[1:-1],
        *(_string_literal(value, quote_character) for quote_character in ("'", '"', "")),
        mojibake,
        json.dumps(mojibake)[1:-1],
    }
    # A whole URL kept as a key (a webhook) goes out as the HTTP client normalises it, and
    # the target sees its path and query on the request line.
    if value.startswith(("http://", "https://")):
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError):
            pass
        else:
            texts |= {str(url), url.raw_path.decode("ascii", errors="replace")}
    forms = {json_escaped.replace("/", "\\/")}
    for text in texts:
        forms |= {
            text,
            quote(text, safe=""),
            quote(text),
            quote_plus(text),
            html.escape(text),
            html.escape(text, quote=False),
        }
        for fragment in _base64_fragments(text.encode()):
            # A Basic auth header echoed in a URL has its base64 percent-encoded.
            forms |= {fragment, quote(fragment, safe="")}
    return frozenset({form for form in forms if len(form) >= MIN_FRAGMENT} | {value})


class Redactor:
    """Built once per run from the (name, value) pairs of the keys it used (``for_run``)."""

    @classmethod
    def for_run(cls, secrets: Iterable[tuple[str, str]]) -> Redactor:
        """The redactor of these keys, shared by the runs that use the same ones: building
        the automaton of 50 keys costs about 0.4 ms, a lookup a few µs."""
        return _shared_redactor(tuple(sorted(secrets)))

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

    def redact_cut_text(self, text: str) -> str:
        """``redact_text`` for a text cut at a size limit, which may end with the first
        characters of a value (in any of its forms): those are redacted too."""
        text = self.redact_text(text)
        if self._empty or not text:
            return text
        cut_at, replacement = len(text), ""
        for form, form_replacement in zip(self._forms, self._replacements, strict=True):
            if len(form) <= MIN_FRAGMENT:
                continue
            # Only a proper prefix of the form can end the text (whole forms are gone).
            head = form[:MIN_FRAGMENT]
            position = text.find(head, max(0, len(text) - len(form) + 1))
            while position != -1 and position < cut_at:
                if form.startswith(text[position:]):
                    cut_at, replacement = position, form_replacement
                    break
                position = text.find(head, position + 1)
        return text[:cut_at] + replacement

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


@functools.lru_cache(maxsize=REDACTORS_CACHE_SIZE)
def _shared_redactor(secrets: tuple[tuple[str, str], ...]) -> Redactor:
    # A Redactor never changes once built, so threads may share it.
    return Redactor(secrets)


# --- Log records -------------------------------------------------------------------------

_run_redactor: ContextVar[Redactor | None] = ContextVar("run_redactor", default=None)


@contextmanager
def redacting_logs(redactor: Redactor) -> Iterator[None]:
    """Redact every log record created in this context (this thread or task) with
    ``redactor``: put it around the part of a run that holds decrypted values."""
    token = _run_redactor.set(redactor)
    try:
        yield
    finally:
        _run_redactor.reset(token)


def _redacting_factory(make_record: Callable[..., logging.LogRecord]) -> Callable[..., Any]:
    def make_redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        redactor = _run_redactor.get()
        if redactor is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the logging module reports it later
            message = str(record.msg)
        # The message is rendered now, so no handler ever sees the arguments.
        record.msg, record.args = _redacted_log_text(redactor, message), None
        if record.exc_info:
            # Formatters print exc_text when it is set; the traceback object is dropped.
            formatted = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text, record.exc_info = _redacted_log_text(redactor, formatted), None
        if record.stack_info:
            record.stack_info = _redacted_log_text(redactor, record.stack_info)
        return record

    return make_redacted_record


def _redacted_log_text(redactor: Redactor, text: str) -> str:
    # The automaton takes UTF-8 only: a lone surrogate becomes "?" rather than making the
    # logging call itself fail.
    return redactor.redact_text(text.encode("utf-8", "replace").decode("utf-8"))


def install_log_redaction() -> None:
    """Make every log record pass through the redactor of the run in progress, if any.
    Called once, when the app is ready (``WorkflowsConfig.ready``)."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "redacts_runs", False):
        redacting = _redacting_factory(factory)
        redacting.redacts_runs = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(redacting)
