from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from workflows.redaction import Redactor, encoded_forms

VALUE = 'sk_live_4eC39/Hq+LyjW "Dar" <é>'


@pytest.mark.parametrize(
    "leak",
    [
        VALUE,
        quote(VALUE, safe=""),
        quote_plus(VALUE),
        json.dumps(VALUE)[1:-1],
        json.dumps({"token": VALUE}),
        base64.b64encode(VALUE.encode()).decode(),
        base64.urlsafe_b64encode(VALUE.encode()).decode(),
        "Basic " + base64.b64encode(f"bob:{VALUE}".encode()).decode(),
        "Basic " + base64.b64encode(f"alice99:{VALUE}".encode()).decode(),
        base64.b64encode(json.dumps({"a": VALUE}).encode()).decode(),
        "&lt;" + VALUE.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"),
    ],
)
def test_every_common_encoding_is_redacted(leak):
    redacted = Redactor([("Stripe", VALUE)]).redact_text(f"before {leak} after")
    assert "[redacted:Stripe]" in redacted
    # No run of 8 characters of any encoded form survives.
    for form in encoded_forms(VALUE):
        assert form not in redacted or len(form) < 8


def test_redacts_nested_json_keys_and_values():
    redactor = Redactor([("A", "alpha-secret-1"), ("B", "bravo-secret-2")])
    output = {"alpha-secret-1": ["x bravo-secret-2 y", {"n": 1, "s": "alpha-secret-1"}], "ok": True}
    assert redactor.redact(output) == {
        "[redacted:A]": ["x [redacted:B] y", {"n": 1, "s": "[redacted:A]"}],
        "ok": True,
    }


def test_longest_match_wins_between_overlapping_keys():
    redactor = Redactor([("Short", "secret-12"), ("Long", "secret-12345")])
    assert (
        redactor.redact_text("secret-12345 and secret-12") == "[redacted:Long] and [redacted:Short]"
    )


def test_no_keys_is_a_no_op():
    assert Redactor([]).redact({"a": "b"}) == {"a": "b"}


def test_short_values_are_still_redacted_in_plain_form():
    redactor = Redactor([("Pin", "1234")])
    assert redactor.redact_text("pin=1234") == "pin=[redacted:Pin]"
