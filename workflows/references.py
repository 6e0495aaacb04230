"""The one parser and resolver of references in action configs.

A string value in an action may hold ``{{secret:<uuid>}}`` (a secret key, by id),
``{{inputs.<name>}}`` (a trigger input) and ``{{steps.<n>.<path>}}`` (the output of an
earlier step, 1-based, e.g. ``{{steps.1.body.token}}``). Anything else written between
``{{`` and ``}}`` is a malformed reference and a validation error naming the field.

Resolving is where a value enters a request, so it encodes the value for where it goes: in
a URL percent-encoded, in a raw JSON body JSON-escaped; a header value may not contain a
line break. A resolved value can therefore never change a request's structure.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote

# A name a reference can use: trigger inputs and Run Code variables.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
# Everything between double braces is a reference (or a mistake).
_BRACES = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_SECRET = re.compile(r"secret:([0-9a-fA-F-]{36})")
_INPUT = re.compile(rf"inputs\.({IDENTIFIER.pattern})")
_STEP = re.compile(r"steps\.([1-9][0-9]{0,3})((?:\.[A-Za-z0-9_-]{1,100}){0,20})")
# Where a step reference's number starts, for renumbering.
_STEP_NUMBER = re.compile(r"(\{\{\s*steps\.)([0-9]+)")


class InvalidReference(ValueError):
    """A malformed or unresolvable reference; the message names the field."""


class Kind(StrEnum):
    SECRET = "secret"
    INPUT = "inputs"
    STEP = "steps"


@dataclass(frozen=True)
class Reference:
    kind: Kind
    text: str  # as written, braces included
    secret_id: uuid.UUID | None = None
    name: str | None = None  # the input's name
    step: int | None = None
    path: tuple[str, ...] = ()


class Encoding(StrEnum):
    PLAIN = "plain"  # query and body fields (httpx encodes them), code variables
    URL = "url"  # inside the URL: percent-encoded
    JSON = "json"  # inside a raw JSON body: escaped, numbers/objects as JSON
    HEADER = "header"  # header values: no CR/LF/NUL


def parse(text: str, field: str) -> list[Reference]:
    """Every reference in ``text``; a malformed one raises ``InvalidReference``."""
    references = []
    for match in _BRACES.finditer(text):
        references.append(_parse_one(match.group(1).strip(), match.group(0), field))
    # A lone "{{" that never closes is a reference the user did not finish.
    remainder = _BRACES.sub("", text)
    if "{{" in remainder:
        raise InvalidReference(
            f"{field}: “{{{{” starts a reference that is never closed with “}}}}”."
        )
    return references


def _parse_one(inner: str, text: str, field: str) -> Reference:
    if match := _SECRET.fullmatch(inner):
        try:
            secret_id = uuid.UUID(match.group(1))
        except ValueError:
            pass
        else:
            return Reference(Kind.SECRET, text, secret_id=secret_id)
    elif match := _INPUT.fullmatch(inner):
        return Reference(Kind.INPUT, text, name=match.group(1))
    elif match := _STEP.fullmatch(inner):
        path = tuple(part for part in match.group(2).split(".") if part)
        return Reference(Kind.STEP, text, step=int(match.group(1)), path=path)
    raise InvalidReference(
        f"{field}: {text} is not a reference. Use {{{{secret:<id>}}}}, {{{{inputs.<name>}}}} "
        "or {{steps.<n>.<path>}}."
    )


@dataclass
class Context:
    """What references resolve to during one run."""

    secrets: Mapping[uuid.UUID, str]
    inputs: Mapping[str, Any]
    steps: list[Any]  # outputs of the steps run so far, in order


def lookup(reference: Reference, context: Context, field: str) -> Any:
    if reference.kind is Kind.SECRET:
        if reference.secret_id not in context.secrets:
            raise InvalidReference(f"{field}: {reference.text} is not available.")
        return context.secrets[reference.secret_id]
    if reference.kind is Kind.INPUT:
        if reference.name not in context.inputs:
            raise InvalidReference(f"{field}: the input “{reference.name}” was not given.")
        return context.inputs[reference.name]
    if reference.step > len(context.steps):
        raise InvalidReference(f"{field}: {reference.text} refers to a step that has not run yet.")
    value = context.steps[reference.step - 1]
    for part in reference.path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise InvalidReference(
                f"{field}: {reference.text} — step {reference.step} has no “{part}”."
            )
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


_ENCODERS: dict[Encoding, Callable[[Any], str]] = {
    Encoding.PLAIN: _as_text,
    Encoding.URL: lambda value: quote(_as_text(value), safe=""),
    # Strings are escaped for use between quotes; other JSON values go in as JSON.
    Encoding.JSON: lambda value: (
        json.dumps(value)[1:-1] if isinstance(value, str) else json.dumps(value)
    ),
    Encoding.HEADER: _as_text,
}


def resolve(text: str, context: Context, field: str, encoding: Encoding) -> str:
    """``text`` with every reference replaced by its value, encoded for where it goes."""
    encode = _ENCODERS[encoding]

    def replace(match: re.Match) -> str:
        reference = _parse_one(match.group(1).strip(), match.group(0), field)
        return encode(lookup(reference, context, field))

    resolved = _BRACES.sub(replace, text)
    if encoding is Encoding.HEADER and any(character in resolved for character in "\r\n\x00"):
        raise InvalidReference(f"{field}: a header value cannot contain line breaks.")
    return resolved


def resolve_value(text: str, context: Context, field: str) -> Any:
    """For code variables: a value that is exactly one reference keeps its JSON type."""
    match = _BRACES.fullmatch(text.strip())
    if match and text.strip() == text:
        reference = _parse_one(match.group(1).strip(), match.group(0), field)
        return lookup(reference, context, field)
    return resolve(text, context, field, Encoding.PLAIN)


def secret_ids_in(text: str) -> set[uuid.UUID]:
    """Ids of the well-formed secret references in ``text``, ignoring anything malformed
    (for showing names beside a form that may not be valid yet)."""
    ids = set()
    for match in _BRACES.finditer(text):
        secret = _SECRET.fullmatch(match.group(1).strip())
        if secret:
            try:
                ids.add(uuid.UUID(secret.group(1)))
            except ValueError:
                continue
    return ids


def with_references_replaced(text: str, replacement: str) -> str:
    """``text`` with every reference (well-formed or not) replaced by ``replacement``."""
    return _BRACES.sub(replacement, text)


def renumber_steps(text: str, mapping: dict[int, int]) -> str:
    """``text`` with each {{steps.<n>…}} pointing at step ``mapping[n]`` (others as is)."""
    return _STEP_NUMBER.sub(
        lambda match: match.group(1) + str(mapping.get(int(match.group(2)), int(match.group(2)))),
        text,
    )
