from __future__ import annotations

import uuid

import pytest

from workflows.references import (
    Context,
    Encoding,
    InvalidReference,
    Kind,
    parse,
    resolve,
    resolve_value,
)

KEY = uuid.UUID("11111111-2222-3333-4444-555555555555")
VALUE = 'p@ss/w0rd&x=1 "quoted" \\ ünï'


def _context(**kwargs) -> Context:
    return Context(
        secrets=kwargs.get("secrets", {KEY: VALUE}),
        inputs=kwargs.get("inputs", {"customer": "cus 42", "count": 3}),
        steps=kwargs.get("steps", [{"body": {"token": "t-1", "items": [{"id": 7}]}}]),
    )


def test_parse_every_kind():
    text = f"a {{{{secret:{KEY}}}}} b {{{{inputs.customer}}}} c {{{{steps.1.body.token}}}}"
    references = parse(text, "config.url")
    assert [reference.kind for reference in references] == [Kind.SECRET, Kind.INPUT, Kind.STEP]
    assert references[0].secret_id == KEY
    assert references[1].name == "customer"
    assert (references[2].step, references[2].path) == (1, ("body", "token"))


@pytest.mark.parametrize(
    "text",
    [
        "{{secret:not-a-uuid}}",
        "{{secrets:11111111-2222-3333-4444-555555555555}}",
        "{{inputs.}}",
        "{{inputs.1abc}}",
        "{{steps.0.body}}",
        "{{steps.x}}",
        "{{ password }}",
        "{{}}",
        "open {{inputs.customer",
    ],
)
def test_malformed_references_name_the_field(text):
    with pytest.raises(InvalidReference, match=r"^config\.headers\[0\]\.value"):
        parse(text, "config.headers[0].value")


def test_text_without_references_is_fine():
    assert parse('{"a": {"b": 1}}', "config.body.raw") == []


def test_url_values_are_percent_encoded():
    resolved = resolve(
        f"https://api.test/x?k={{{{secret:{KEY}}}}}", _context(), "url", Encoding.URL
    )
    assert resolved.startswith("https://api.test/x?k=p%40ss%2Fw0rd%26x%3D1%20")
    assert "&x=1" not in resolved


def test_json_values_are_escaped_and_cannot_break_out():
    raw = f'{{"password": "{{{{secret:{KEY}}}}}", "count": {{{{inputs.count}}}}}}'
    resolved = resolve(raw, _context(), "body", Encoding.JSON)
    import json

    assert json.loads(resolved) == {"password": VALUE, "count": 3}


def test_header_values_cannot_hold_line_breaks():
    context = _context(inputs={"customer": "x\r\nX-Injected: 1"})
    with pytest.raises(InvalidReference, match="line breaks"):
        resolve("Bearer {{inputs.customer}}", context, "config.headers[0].value", Encoding.HEADER)


def test_step_paths_walk_objects_and_lists():
    context = _context()
    assert resolve("{{steps.1.body.items.0.id}}", context, "f", Encoding.PLAIN) == "7"
    with pytest.raises(InvalidReference, match="has no “missing”"):
        resolve("{{steps.1.body.missing}}", context, "f", Encoding.PLAIN)
    with pytest.raises(InvalidReference, match="has not run yet"):
        resolve("{{steps.2.body}}", context, "f", Encoding.PLAIN)


def test_missing_input_and_unavailable_secret_are_clear():
    with pytest.raises(InvalidReference, match="input “other” was not given"):
        resolve("{{inputs.other}}", _context(), "f", Encoding.PLAIN)
    with pytest.raises(InvalidReference, match="is not available") as raised:
        resolve(f"{{{{secret:{KEY}}}}}", _context(secrets={}), "f", Encoding.PLAIN)
    assert VALUE not in str(raised.value)


def test_a_whole_reference_keeps_its_json_type_for_code_variables():
    context = _context()
    assert resolve_value("{{steps.1.body}}", context, "f") == {"token": "t-1", "items": [{"id": 7}]}
    assert resolve_value("{{inputs.count}}", context, "f") == 3
    assert resolve_value("n={{inputs.count}}", context, "f") == "n=3"
