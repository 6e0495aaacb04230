"""Tools of the canary leak scan (tests/security/test_canary_leaks.py).

- ``Canary`` and ``leak_forms``: a unique secret value and every form a leak of it takes.
- ``LeakScanner``: one Aho-Corasick pass per text over all forms of all canaries; each hit
  says where it was and which form it took.
- ``discover_routes`` and ``fill_route``: every URL pattern of the URL conf, with its path
  parameters filled from real objects, so a new route is crawled without editing the test.
- ``page_links`` and ``form_fields``: what a crawler follows and posts, read from the HTML.
- ``dump_database``: every column of every table, read with a raw cursor (SQLite and
  PostgreSQL alike).
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import ahocorasick_rs
from django.contrib import admin
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from django.urls.resolvers import RegexPattern, RoutePattern

from workflows.redaction import encoded_forms

# Characters that need escaping in a URL, JSON, HTML, a Python or JavaScript string
# literal, plus a non-ASCII letter (UTF-8 bytes that a careless decoder turns into mojibake).
CANARY_TAIL = "-<&>\"'/+=%é\\"


@dataclass(frozen=True)
class Canary:
    """A secret value to hunt for. ``marker`` is a unique ASCII prefix of the value that
    every text encoding (URL, JSON, HTML, string literals) leaves intact, so even a
    partial or doubly encoded leak still shows it."""

    label: str
    value: str
    marker: str | None = None

    @classmethod
    def new(cls, label: str) -> Canary:
        marker = f"canary-{uuid.uuid4().hex}"
        return cls(label, marker + CANARY_TAIL, marker)


# --- The forms a leak takes --------------------------------------------------------------


def _escaped(value: str, quote_character: str) -> str:
    """A string literal's body: backslash escapes, as JavaScript's util.inspect and most
    languages print a string inside quotes (Python's repr is added exactly, below)."""
    text = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    text = text.replace("\t", "\\t")
    return text.replace(quote_character, "\\" + quote_character) if quote_character else text


def _base64_pieces(data: bytes) -> dict[str, str]:
    """Base64 of ``data`` on its own and at each offset of a longer text (as in
    base64("user:" + value)), without the characters that mix in neighbouring bytes."""
    pieces = {}
    for encoding, encode in (
        ("base64", base64.b64encode),
        ("urlsafe base64", base64.urlsafe_b64encode),
    ):
        pieces[encoding] = encode(data).decode()
        for shift in range(3):
            encoded = encode(b"\0" * shift + data).decode()
            start = {0: 0, 1: 2, 2: 3}[shift]
            end = len(encoded) if (shift + len(data)) % 3 == 0 else len(encoded) - 4
            pieces[f"{encoding} at offset {shift} of a longer text"] = encoded[start:end]
    return pieces


def text_forms(value: str) -> dict[str, str]:
    """The texts a value is written as before any transport encoding."""
    json_ascii = json.dumps(value)[1:-1]
    return {
        "raw": value,
        "JSON-escaped (ensure_ascii=True)": json_ascii,
        "JSON-escaped (ensure_ascii=False)": json.dumps(value, ensure_ascii=False)[1:-1],
        "JSON-escaped with \\/": json_ascii.replace("/", "\\/"),
        # Django's json_script filter: JSON with <, > and & escaped for a <script> element.
        "JSON in <script> (json_script)": json_ascii.replace("<", "\\u003C")
        .replace(">", "\\u003E")
        .replace("&", "\\u0026"),
        "Python repr": repr(value)[1:-1],
        "Python ascii()": ascii(value)[1:-1],
        "string literal, ' escaped (JavaScript inspect)": _escaped(value, "'"),
        'string literal, " escaped': _escaped(value, '"'),
        "string literal, backslashes escaped (JavaScript inspect in backticks)": _escaped(
            value, ""
        ),
        # An HTTP server decodes header bytes as ISO-8859-1 (http.server does).
        "UTF-8 read as Latin-1 (mojibake)": value.encode("utf-8").decode("latin-1"),
    }


def leak_forms(value: str, usernames: Iterable[str] = ()) -> dict[str, str]:
    """Every form of ``value`` this scan looks for → a name that says which form it is.

    Each text form (raw, JSON-escaped, a string literal, mojibake …) is looked for as is,
    URL-encoded three ways, HTML-escaped and in base64 (alone or inside a longer text);
    base64 is also looked for URL-encoded (a Basic auth header in a query string). Plus
    base64("user:value") for the given users, and every form of the app's own
    ``workflows.redaction.encoded_forms``.
    """
    forms: dict[str, str] = {}

    def add(name: str, form: str) -> None:
        if len(form) >= 8:
            forms.setdefault(form, name)

    for text_name, text in text_forms(value).items():
        add(text_name, text)
        add(f"{text_name}, URL-encoded (quote safe='')", quote(text, safe=""))
        add(f"{text_name}, URL-encoded (quote)", quote(text))
        add(f"{text_name}, URL-encoded (quote_plus)", quote_plus(text))
        add(f"{text_name}, HTML-escaped", html.escape(text))
        add(f"{text_name}, HTML-escaped (quote=False)", html.escape(text, quote=False))
        for piece_name, piece in _base64_pieces(text.encode("utf-8")).items():
            add(f"{text_name}, {piece_name}", piece)
            add(f"{text_name}, {piece_name}, URL-encoded", quote(piece, safe=""))
    for username in usernames:
        credentials = f"{username}:{value}".encode()
        add(f"base64 of {username}:value (Basic auth)", base64.b64encode(credentials).decode())
        add(
            f"urlsafe base64 of {username}:value",
            base64.urlsafe_b64encode(credentials).decode(),
        )
    for form in encoded_forms(value):
        add("a form of workflows.redaction.encoded_forms", form)
    return forms


def marker_forms(marker: str) -> dict[str, str]:
    """Form → name. The unique prefix survives URL, JSON, HTML and string-literal
    escaping unchanged; base64 changes it, so its base64 forms are looked for too."""
    forms = {marker: "the unique prefix of the value (a partial or unknown encoding)"}
    for piece_name, piece in _base64_pieces(marker.encode()).items():
        forms.setdefault(piece, f"the unique prefix of the value, {piece_name}")
    return forms


# --- The scanner -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    where: str
    canary: str
    form: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.where}: {self.canary} as {self.form}: …{self.excerpt}…"


@dataclass
class LeakScanner:
    """Scans texts as they come; keeps only the hits and what was scanned."""

    canaries: Sequence[Canary]
    usernames: Sequence[str] = ()
    hits: list[Hit] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    characters: int = 0

    def __post_init__(self) -> None:
        patterns: dict[str, tuple[str, str]] = {}
        for canary in self.canaries:
            named = leak_forms(canary.value, self.usernames)
            if canary.marker:
                named = marker_forms(canary.marker) | named
            for form, name in named.items():
                patterns.setdefault(form, (canary.label, name))
        self._patterns = list(patterns)
        self._labels = [patterns[pattern] for pattern in self._patterns]
        # Leftmost-longest: where a full form matches, it is reported rather than the
        # unique prefix it starts with.
        self._automaton = ahocorasick_rs.AhoCorasick(
            self._patterns, matchkind=ahocorasick_rs.MatchKind.LeftmostLongest
        )

    @property
    def form_count(self) -> int:
        return len(self._patterns)

    def scan(self, category: str, where: str, text: str) -> None:
        self.scanned[category] = self.scanned.get(category, 0) + 1
        if not text:
            return
        self.characters += len(text)
        for index, start, end in self._automaton.find_matches_as_indexes(text):
            canary, form = self._labels[index]
            excerpt = text[max(0, start - 40) : end + 40].replace("\n", "⏎")
            self.hits.append(Hit(where, canary, form, excerpt))

    def report(self, limit: int = 60) -> str:
        """The first hit of each (canary, form, kind of place), with how often it occurred:
        one line per distinct leak rather than hundreds of copies of one."""
        groups: dict[tuple[str, str, str], list[Hit]] = {}
        for hit in self.hits:
            place = hit.where.split(" ", 1)[0]
            groups.setdefault((hit.canary, hit.form, place), []).append(hit)
        lines = [
            f"[{len(hits)}×] {hits[0]}"
            for hits in sorted(groups.values(), key=lambda hits: -len(hits))[:limit]
        ]
        if len(groups) > limit:
            lines.append(f"… and {len(groups) - limit} more kinds")
        return f"{len(self.hits)} leak(s) of canary values:\n" + "\n".join(lines)


def as_text(value: Any) -> str:
    """A database cell or a Python object as the text a leak would be found in."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (dict, list)):
        # PostgreSQL's jsonb comes back parsed; SQLite's JSON comes back as its text.
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# --- Routes of the URL conf --------------------------------------------------------------

_ROUTE_PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>\w+)>")
_REGEX_PARAMETER = re.compile(r"\(\?P<(?P<name>\w+)>(?:[^()]|\([^()]*\))*\)")


@dataclass(frozen=True)
class Route:
    """One URL pattern, with the text of every pattern that leads to it."""

    patterns: tuple[Any, ...]
    name: str | None
    callback: Callable[..., Any]

    @property
    def text(self) -> str:
        return "".join(str(pattern) for pattern in self.patterns)

    @property
    def parameters(self) -> dict[str, str]:
        """Parameter name → converter name (``str`` for regex groups)."""
        found: dict[str, str] = {}
        for pattern in self.patterns:
            if isinstance(pattern, RoutePattern):
                for match in _ROUTE_PARAMETER.finditer(str(pattern)):
                    found[match["name"]] = match["converter"] or "str"
            elif isinstance(pattern, RegexPattern):
                for name in pattern.regex.groupindex:
                    found[name] = "str"
        return found

    @property
    def view_class(self) -> type | None:
        return getattr(self.callback, "cls", None) or getattr(self.callback, "view_class", None)

    @property
    def model_admin(self) -> Any:
        """The ModelAdmin whose URLs hold this route (also for extra views such as a
        user's password change, whose callback does not say)."""
        model_admin = getattr(self.callback, "model_admin", None)
        if model_admin is not None:
            return model_admin
        for model, registered in admin.site._registry.items():
            prefix = f"admin/{model._meta.app_label}/{model._meta.model_name}/"
            if self.text.startswith(prefix):
                return registered
        return None

    def path(self, values: Mapping[str, str]) -> str:
        """The URL with ``values`` in its parameters (checked by resolving it back)."""
        pieces = []
        for pattern in self.patterns:
            text = str(pattern)
            if isinstance(pattern, RegexPattern):
                text = _REGEX_PARAMETER.sub(lambda match: str(values[match["name"]]), text)
                text = text.removeprefix("^").removesuffix("$").replace("\\", "")
            else:
                text = _ROUTE_PARAMETER.sub(lambda match: str(values[match["name"]]), text)
            pieces.append(text)
        return "/" + "".join(pieces)


def discover_routes(
    patterns: Sequence[Any] | None = None, parents: tuple[Any, ...] = (), namespace: str = ""
) -> list[Route]:
    """Every URL pattern of the URL conf, recursively through includes."""
    if patterns is None:
        patterns = get_resolver().url_patterns
    routes = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            routes += discover_routes(pattern.url_patterns, (*parents, pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}{pattern.name}" if pattern.name else None
            routes.append(Route((*parents, pattern.pattern), name, pattern.callback))
    return routes


def fill_route(
    route: Route,
    candidates: Callable[[Route, str, str], Sequence[str]],
    pairs: Mapping[tuple[str, ...], Sequence[tuple[str, ...]]] | None = None,
    limit: int = 500,
) -> list[str]:
    """Concrete paths of ``route``: its parameters filled with ``candidates(route, name,
    converter)`` (or, for parameters that belong together, with ``pairs``), keeping only
    paths that resolve back to the route's own view."""
    parameters = route.parameters
    if not parameters:
        return [route.path({})]
    names = tuple(parameters)
    pairs = pairs or {}
    if names in pairs:
        combinations: Iterable[tuple[str, ...]] = pairs[names]
    else:
        combinations = itertools.product(
            *(candidates(route, name, converter) for name, converter in parameters.items())
        )
    paths = []
    for combination in itertools.islice(combinations, limit):
        path = route.path(dict(zip(names, combination, strict=True)))
        try:
            match = resolve(urlsplit(path).path)
        except Resolver404:
            continue
        if match.func is route.callback:
            paths.append(path)
    return paths


# --- HTML --------------------------------------------------------------------------------


# Attributes a browser or htmx requests with GET: links, htmx GETs, GET forms' actions
# (a form's method is checked below). A regex, not an HTML parser: it is much faster, and
# Django's templates quote every attribute with double quotes.
_LINK_ATTRIBUTE = re.compile(r'\s(?:href|hx-get|data-url)="([^"]*)"')
_FORM_TAG = re.compile(r"<form\b[^>]*>", re.IGNORECASE)
_FORM_ACTION = re.compile(r'\saction="([^"]*)"', re.IGNORECASE)
_FORM_METHOD = re.compile(r'\smethod="([^"]*)"', re.IGNORECASE)


def page_links(page: str) -> list[str]:
    """Same-site paths a user can follow from the page (links, htmx GETs, GET forms)."""
    raw = _LINK_ATTRIBUTE.findall(page)
    for form in _FORM_TAG.findall(page):
        method = _FORM_METHOD.search(form)
        action = _FORM_ACTION.search(form)
        if action and (method is None or method.group(1).lower() == "get"):
            raw.append(action.group(1))
    links = []
    for link in raw:
        parts = urlsplit(html.unescape(link))
        if parts.scheme or parts.netloc or not parts.path.startswith("/"):
            continue
        links.append(parts.path + (f"?{parts.query}" if parts.query else ""))
    return links


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fields: dict[str, list[str]] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        name = attributes.get("name")
        if tag == "input" and name and "__prefix__" not in name:
            kind = (attributes.get("type") or "text").lower()
            if kind in ("submit", "button", "image", "file"):
                return
            if kind in ("checkbox", "radio") and "checked" not in attributes:
                return
            self.fields.setdefault(name, []).append(attributes.get("value") or "")
        elif tag == "select" and name and "__prefix__" not in name:
            self._select = name
            self.fields.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in attributes:
            self.fields[self._select].append(attributes.get("value") or "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields[name] = [""]

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.fields[self._textarea][-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def form_fields(page: str) -> dict[str, list[str]]:
    """What a browser would submit from the page's forms as rendered (every form's
    fields merged: enough for the single-form pages of Django admin)."""
    parser = _FormParser()
    parser.feed(page)
    return parser.fields


# --- The database ------------------------------------------------------------------------


def dump_database(
    connection: Any, skip: Iterable[tuple[str, str]] = ()
) -> Iterator[tuple[str, str, int, Any]]:
    """(table, column, row number, cell) of every table, through a raw cursor."""
    skipped = set(skip)
    tables = connection.introspection.table_names()
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            columns = [column[0] for column in cursor.description]
            for row_number, row in enumerate(cursor.fetchall()):
                for column, cell in zip(columns, row, strict=True):
                    if (table, column) not in skipped:
                        yield table, column, row_number, cell
