"""Redaction: the one function that takes every secret value of a run out of what is kept.

Every output, error and log of a run goes through ``Redactor.redact`` before it is stored
or returned. A value is replaced, as ``[redacted:<label>]`` (the label it was given with:
runs give the key's id), in the forms it is found in once a request, a target or a
program has handled it (``encoded_forms``):

- The value as written inside strings: JSON-escaped, as Python's repr or a JavaScript
  string literal, as a Python bytes literal, and as the mojibake of a server that reads
  UTF-8 as ISO-8859-1. Each of these travels URL-encoded, HTML-escaped or base64-encoded.
  For base64 the value may sit at any offset of a longer encoded text (``user:value`` in a
  Basic auth header, a value inside an encoded JSON document), so the encoded value is
  computed for each of the three alignments, leaving out the characters that depend on
  the unknown bytes around it.
- Escaped twice: JSON-escaped once more (a target that answers an error as text holding
  the JSON body it got), a JSON text printed inside a Python dict or a JavaScript object,
  a message that quotes the value (KeyError, int()) printed inside a list or as JSON;
  each of these URL-encoded and HTML-escaped as well.
- In hexadecimal, lower and upper case (``value.encode().hex()``, a Buffer as hex), and
  as Node prints a Buffer (the first 50 bytes in spaced hex).
- A multi-line value (a PEM key), as GitHub Actions masks one: each line of 8 characters
  or more alone (surrounding whitespace stripped; a PEM's BEGIN/END lines are the same for
  every key and are left out), and the whole value, as is and JSON-escaped, with CRLF or
  LF line endings, without its surrounding whitespace (a trailing newline) and with its
  line breaks removed (what URL parsers do to tabs and newlines).
- A whole URL kept as a key (a webhook, a database URL): as the HTTP client sends it, and
  its user name, password, path segments and query (or fragment) values of 8 characters
  or more, as written in the URL and decoded, because targets echo a request parsed; and
  the Basic auth credentials a client makes of the user name and password. A part that is
  a plain lowercase word ("services", "webhooks") names a route rather than being a
  secret and is left out; a password never is.
- Prefixes and fragments that error messages quote. V8's ``JSON.parse`` quotes a text of
  21 characters or more around the unexpected token: its first 10 to 19 characters
  (``Unexpected token 's', "secretvalu"... is not valid JSON``), the 20 around the token
  or the last ones. That fragment is computed as V8 computes it and redacted with the
  quotes and dots around it, which keeps so short a form from matching other text. V8
  also quotes the first 1,000 characters of a longer value (``BigInt(value)``), CPython's
  ``int()`` the first 200 characters of its repr, and Node's util.inspect the first
  10,000 characters of a string; a multi-line value's line cut short there is a line too.

Whole-value forms of fewer than MIN_FRAGMENT characters are left out, and every form of a
part of a value (a line, a URL part, a quoted prefix) has at least MIN_PART characters:
shorter ones would match ordinary text. The plain value is always redacted.

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
import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

import ahocorasick_rs
import httpx

# Encoded fragments shorter than this would match ordinary text; the plain value is
# always redacted, whatever its length.
MIN_FRAGMENT = 6
# Forms of a part of a value (a line, a URL part, a quoted prefix) are at least this long.
MIN_PART = 8
# Values whose encoded forms are kept (about 5 KB for a 40-character value, 75 KB for a
# PEM key).
FORMS_CACHE_SIZE = 2048
# Redactors kept for the key sets of recent runs.
REDACTORS_CACHE_SIZE = 64

# V8 (Node 20) JsonParser: a source shorter than 21 characters is quoted whole, a longer
# one as the 10 characters on either side of the unexpected token.
V8_JSON_CONTEXT = 10
V8_JSON_WHOLE_BELOW = 2 * V8_JSON_CONTEXT + 1
V8_JSON_WHITESPACE = " \t\n\r"
V8_JSON_LITERALS = {"t": "true", "f": "false", "n": "null"}
V8_JSON_NUMBER_OR_STRING = '"-0123456789'
# V8 cuts a string it quotes in an error message ("Cannot convert <value> to a BigInt")
# after 1,000 characters, adding "…"; CPython's int() quotes its argument as "%.200R";
# Node's util.inspect cuts a string at maxStringLength and shows a Buffer's first 50 bytes.
V8_MESSAGE_MAX_STRING = 1000
CPYTHON_INT_REPR_CHARACTERS = 200
NODE_INSPECT_MAX_STRING = 10_000
NODE_INSPECT_BUFFER_BYTES = 50

LINE_BREAK = re.compile(r"\r\n|\r|\n")
# What the WHATWG URL parser and urllib.parse.urlsplit remove from a URL before parsing.
URL_STRIPPED = re.compile(r"[\t\r\n]")
PEM_ARMOR = re.compile(r"-----(BEGIN|END) [A-Z0-9 ]+-----")
URL_SHAPED = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
PLAIN_WORD = re.compile(r"[a-z]+(?:[-_.][a-z]+)*")


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


def _string_texts(text: str) -> set[str]:
    """``text`` and how it is written inside a string: JSON-escaped (Python's default and
    JavaScript's JSON.stringify), Python's repr, JavaScript's util.inspect."""
    return {
        text,
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        repr(text)[1:-1],
        *(_string_literal(text, quote_character) for quote_character in ("'", '"', "")),
    }


def _transport_forms(text: str) -> set[str]:
    """``text`` as it travels in a URL or in HTML."""
    return {
        text,
        quote(text, safe=""),
        quote(text),
        quote_plus(text),
        html.escape(text),
        html.escape(text, quote=False),
    }


def _whole_value_variants(value: str) -> set[str]:
    """The value as a program or a target may hand it back changed: without its
    surrounding whitespace (a trailing newline), with CRLF or LF line endings, and with
    its line breaks removed."""
    variants = set()
    for text in (value, value.strip()):
        lines = LINE_BREAK.split(text)
        variants |= {"\n".join(lines), "\r\n".join(lines)}
    variants.add(URL_STRIPPED.sub("", value))
    return variants - {value}


def _double_escaped(value: str) -> set[str]:
    """The value escaped twice: a JSON text JSON-encoded again (a target's error answer)
    or printed inside a dict or an object, and a message that quotes the value (KeyError,
    int()) printed inside a list or encoded as JSON."""
    texts = set()
    for inner in {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}:
        texts |= {json.dumps(inner)[1:-1], json.dumps(inner, ensure_ascii=False)[1:-1]}
        texts |= {repr(inner)[1:-1], _string_literal(inner, "'")}
    quoted = repr(value)[1:-1]
    texts |= {
        repr(quoted)[1:-1],
        json.dumps(quoted)[1:-1],
        json.dumps(quoted, ensure_ascii=False)[1:-1],
    }
    return texts


def _lines(value: str) -> list[str]:
    """The lines of a multi-line value worth masking on their own, and the line cut short
    where V8 or Node's util.inspect stop quoting a long value (util.inspect prints each
    line of a multi-line string on its own)."""
    if not LINE_BREAK.search(value):
        return []
    lines = LINE_BREAK.split(value)
    for cut in (V8_MESSAGE_MAX_STRING, NODE_INSPECT_MAX_STRING):
        if len(value) > cut:
            lines.append(LINE_BREAK.split(value[:cut])[-1])
    stripped = (line.strip() for line in lines)
    return [line for line in stripped if len(line) >= MIN_PART and not PEM_ARMOR.fullmatch(line)]


def _url_parts(value: str) -> set[str]:
    """The parts of a URL-shaped value a target may echo parsed: user name, password, path
    segments, query values, each as written in the URL and decoded, and the Basic auth
    credentials a client makes of the user name and password."""
    if not URL_SHAPED.fullmatch(value):
        return set()
    try:
        url = urlsplit(value)
    except ValueError:  # an invalid IPv6 host, for one
        return set()
    userinfo, _, _ = url.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    written = [user, *url.path.split("/")]
    # Query values (a fragment may hold some too: #access_token=...), or a bare item.
    for items in (url.query, url.fragment):
        written += [item.split("=", 1)[-1] for item in items.split("&")]
    parts: set[str] = set()
    for part in written:
        decoded = {unquote(part), unquote_plus(part)}
        if not any(PLAIN_WORD.fullmatch(text) for text in decoded):
            parts |= {part, *decoded}
    if has_password:
        parts |= {password, unquote(password)}
        # A client turns the URL's credentials into a Basic auth header.
        credentials = f"{unquote(user)}:{unquote(password)}".encode()
        parts.add(base64.b64encode(credentials).decode())
    return {part for part in parts if len(part) >= MIN_PART}


def _json_parse_error_position(value: str) -> int | None:
    """Where V8's ``JSON.parse(value)`` fails with "Unexpected token", the one JSON.parse
    error that quotes the text; None when it parses or fails with a message that quotes
    nothing (a number or string cut short or out of place, text after a whole JSON value,
    a bad property name, the end of the input). Checked against Node 20 by
    tests/workflows/test_redaction_forms.py."""
    position = len(value) - len(value.lstrip(V8_JSON_WHITESPACE))
    if position == len(value) or value[position] in V8_JSON_NUMBER_OR_STRING:
        return None
    if value[position] in V8_JSON_LITERALS:
        position = _literal_mismatch(value, position)
    elif value[position] in "[{":
        # Inside an array or an object, Python's parser stands in for V8's: where it
        # expects a value and finds none, V8 finds an unexpected token (V8's other errors
        # there quote nothing). Python accepts NaN and Infinity, V8 does not: spelled
        # otherwise (the same length, still valid inside a string), Python refuses them.
        try:
            json.loads(value.replace("NaN", "xaN").replace("Infinity", "xnfinity"))
        except json.JSONDecodeError as error:
            if error.msg != "Expecting value" or error.pos >= len(value):
                return None
            position = error.pos
            if value[position] in V8_JSON_LITERALS:
                position = _literal_mismatch(value, position)
        except RecursionError:
            return None
        else:
            return None
    if position is None or value[position] in V8_JSON_NUMBER_OR_STRING:
        return None  # "Unexpected number" or "Unexpected string", without the text
    return position


def _literal_mismatch(value: str, position: int) -> int | None:
    """The first character that breaks the literal (true, false, null) at ``position``."""
    for offset, expected in enumerate(V8_JSON_LITERALS[value[position]]):
        if position + offset >= len(value):
            return None  # "Unexpected end of JSON input"
        if value[position + offset] != expected:
            return position + offset
    return None


def _quoted_prefixes(value: str) -> set[str]:
    """Prefixes and fragments of the value that error messages quote (see the module
    docstring), each at least MIN_PART characters long."""
    quoted = set()
    # V8 counts UTF-16 code units: for a value with characters outside the BMP its
    # fragments are left out.
    in_bmp = value.isascii() or max(value) <= "\uffff"
    position = _json_parse_error_position(value)
    if position is not None and len(value) >= V8_JSON_WHOLE_BELOW and in_bmp:
        start, end = position - V8_JSON_CONTEXT, position + V8_JSON_CONTEXT
        if start < 0:
            quoted.add(f'"{value[:end]}"...')
        elif end < len(value):
            quoted.add(f'..."{value[start:end]}"...')
        else:
            quoted.add(f'..."{value[start:]}"')
    if len(value) > V8_MESSAGE_MAX_STRING and in_bmp:
        quoted.add(value[:V8_MESSAGE_MAX_STRING])
    representation = repr(value)
    if len(representation) > CPYTHON_INT_REPR_CHARACTERS:
        quoted.add(representation[1:CPYTHON_INT_REPR_CHARACTERS])
    if len(value) > NODE_INSPECT_MAX_STRING:
        head = value[:NODE_INSPECT_MAX_STRING]
        quoted |= {_string_literal(head, quote_character) for quote_character in "'\"`"}
    return quoted


def _hexadecimal(value: str) -> set[str]:
    data = value.encode()
    return {data.hex(), data.hex().upper(), data[:NODE_INSPECT_BUFFER_BYTES].hex(" ")}


@functools.lru_cache(maxsize=FORMS_CACHE_SIZE)
def encoded_forms(value: str) -> frozenset[str]:
    """The value and the forms it is found in when it leaves a request or a program (the
    module docstring lists them and says why).

    Kept for the most recently used values: computing them is most of what a run spends
    per key (0.1 to 0.4 ms for a 40-character value, 4 ms for a PEM key). The cache lives
    in the process that already holds the key that decrypts every value
    (FIELD_ENCRYPTION_KEY), and is never written anywhere."""
    json_escaped = json.dumps(value)[1:-1]
    # An HTTP server reads header bytes as ISO-8859-1 (Python's http.server does), so a
    # target echoing a header sends back the UTF-8 of a non-ASCII value as mojibake.
    mojibake = value.encode("utf-8").decode("latin-1")
    # Texts the value is written as: JSON-escaped, or as a string literal by code that
    # prints a dict, raises KeyError(value) or console.logs an object (Python's repr,
    # JavaScript's util.inspect). Each text may then travel URL-encoded, HTML-escaped or
    # base64-encoded (a JSON body echoed in a query string, a JSON document in a JWT).
    texts = _string_texts(value) | {
        mojibake,
        json.dumps(mojibake)[1:-1],
        repr(value.encode())[2:-1],  # print(value.encode())
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
        forms |= _transport_forms(text)
        for fragment in _base64_fragments(text.encode()):
            # A Basic auth header echoed in a URL has its base64 percent-encoded.
            forms |= {fragment, quote(fragment, safe="")}
    # JSON-escaped twice: rarer, seen URL-encoded or HTML-escaped but not base64-encoded.
    for text in _double_escaped(value) - texts:
        forms |= _transport_forms(text)
    # A multi-line value as a program or a target changed it, as is and JSON-escaped: each
    # form is as long as the value (a PEM key's 1.7 KB), and its lines are forms anyway.
    for variant in _whole_value_variants(value):
        forms |= {variant, json.dumps(variant)[1:-1]}
    forms |= _hexadecimal(value)
    forms = {form for form in forms if len(form) >= MIN_FRAGMENT}
    # Parts of the value, each form at least MIN_PART long: lines and URL parts as they
    # are written in strings and travel; quoted prefixes as error messages are written.
    for part in {*_lines(value), *_url_parts(value)}:
        for text in _string_texts(part):
            forms |= {form for form in _transport_forms(text) if len(form) >= MIN_PART}
    for part in _quoted_prefixes(value):
        forms |= _string_texts(part)
    return frozenset(forms | {value})


class Redactor:
    """Built once per run from the (label, value) pairs of the keys it used (``for_run``).
    Runs label a key by its id, so what they store names no key: readers see the name
    only if they may Use the key (``workflows.reading``)."""

    @classmethod
    def for_run(cls, secrets: Iterable[tuple[str, str]]) -> Redactor:
        """The redactor of these keys, shared by the runs that use the same ones: building
        the automaton of 50 keys costs about 2 ms (20 ms with a PEM key among them: its
        short lines are also inside its long forms), a lookup a few µs."""
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
