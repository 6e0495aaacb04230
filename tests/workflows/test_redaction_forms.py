"""The forms of a value that targets and programs hand back changed, each redacted: the
value JSON-escaped twice, the parts of a URL, the prefixes parser errors quote, the lines
of a multi-line value and the value in hexadecimal (workflows/redaction.py).

The error messages below are what Node 20 and CPython 3.11 print; tests/security/
test_redaction_echo.py checks the same forms through real runs, targets and interpreters.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from urllib.parse import quote, quote_plus

import pytest

from tests.conftest import pem_key
from workflows.redaction import MIN_FRAGMENT, MIN_PART, Redactor, encoded_forms

LABEL = "Key"
PLACEHOLDER = f"[redacted:{LABEL}]"
# A value with characters that JSON, URLs, HTML and string literals escape, and a unique
# ASCII run that every escaping leaves intact: if it survives, part of the value leaked.
MARKER = "Zq8fK2mW7xLp"
TOKEN = f'sk_test_{MARKER}"q\\x/é-91'
WEBHOOK = (
    "https://deploybot7:pa55word-Q9@hooks.example.com/services/T000/B000/XXXXsecretpath"
    "?token=abcdefgh12345&sig=Zx9%2Fq%2Bv8kLmn&x=1"
)


PEM = pem_key(b"redaction forms")
PEM_BODY_LINES = PEM.splitlines()[1:-1]


def redacted(value: str, text: str) -> str:
    return Redactor([(LABEL, value)]).redact_text(text)


# --- JSON-escaped twice ------------------------------------------------------------------


def _body(value: str, ensure_ascii: bool = True) -> str:
    return json.dumps({"token": value, "note": "sent"}, ensure_ascii=ensure_ascii)


@pytest.mark.parametrize(
    "leak",
    [
        # A target answering text/plain with the JSON body it got, JSON-encoded once more.
        lambda value: json.dumps(_body(value)),
        # The same in Node (JSON.stringify escapes no non-ASCII character) ...
        lambda value: json.dumps(_body(value, False), ensure_ascii=False),
        # ... and a body sent by Node, encoded again by Python, or the other way round.
        lambda value: json.dumps(_body(value, False)),
        lambda value: json.dumps(_body(value), ensure_ascii=False),
        # The JSON text printed inside a dict (Python) or an object (Node).
        lambda value: repr({"body": _body(value)}),
        lambda value: "{ body: '" + _body(value).replace("\\", "\\\\") + "' }",
        # And the double-escaped text URL-encoded or HTML-escaped.
        lambda value: "/error?detail=" + quote(json.dumps(_body(value)), safe=""),
        lambda value: "detail=" + quote_plus(json.dumps(_body(value))),
        lambda value: "<pre>" + html.escape(json.dumps(_body(value))) + "</pre>",
    ],
    ids=[
        "python",
        "node",
        "node then python",
        "python then node",
        "python dict",
        "node object",
        "url-encoded",
        "form-encoded",
        "html-escaped",
    ],
)
def test_value_json_escaped_twice_is_redacted(leak):
    text = f"HTTP 400: {leak(TOKEN)}"
    assert MARKER in text

    output = redacted(TOKEN, text)

    assert MARKER not in output
    assert PLACEHOLDER in output


# --- Parts of a URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        "deploybot7",
        "pa55word-Q9",
        "XXXXsecretpath",
        "abcdefgh12345",
        "Zx9%2Fq%2Bv8kLmn",  # as written in the URL
        "Zx9/q+v8kLmn",  # decoded
        "Zx9/q%2Bv8kLmn",  # decoded, then encoded again as a path
        base64.b64encode(b"deploybot7:pa55word-Q9").decode(),  # a Basic auth header
    ],
)
def test_each_part_of_a_url_value_is_redacted_when_echoed_parsed(part):
    echoed = {"segments": ["services", "T000", part], "query": {"token": part}}
    for text in (json.dumps(echoed), f"path part: {part}\n", f"<td>{part}</td>"):
        output = redacted(WEBHOOK, text)
        assert part not in output, text
        assert PLACEHOLDER in output


def test_short_and_plain_word_parts_of_a_url_value_are_left_alone():
    # "services" names a route, T000 and x=1 are short, the host is no secret.
    text = "POST https://hooks.example.com/services/T000 with x=1 as deploy"
    assert redacted(WEBHOOK, text) == text


def test_url_parts_shorter_than_eight_characters_are_not_forms():
    value = "https://api.example.com/Q1w2e3r/Z9x8c7v6?k=Abc1234"
    forms = encoded_forms(value)
    assert "Z9x8c7v6" in forms
    assert "Q1w2e3r" not in forms and "Abc1234" not in forms


# --- Prefixes and fragments quoted by parser errors --------------------------------------


@pytest.mark.parametrize(
    ("value", "message", "expected"),
    [
        # V8 quotes the first 10 characters and those up to 10 after the unexpected token.
        (
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "SyntaxError: Unexpected token 's', \"sk_live_4e\"... is not valid JSON",
            f"SyntaxError: Unexpected token 's', {PLACEHOLDER} is not valid JSON",
        ),
        (
            "test-token-9fK2mW7xLpQ4",  # "t" starts the literal true: the error is at "e"
            "Unexpected token 'e', \"test-token-\"... is not valid JSON",
            f"Unexpected token 'e', {PLACEHOLDER} is not valid JSON",
        ),
        (
            "  \tsecret with spaces 9fK2",
            "Unexpected token 's', \"  \tsecret wit\"... is not valid JSON",
            f"Unexpected token 's', {PLACEHOLDER} is not valid JSON",
        ),
        # In the middle of a longer text, 10 characters on either side of the error ...
        (
            '{"client_id": "abc", "client_secret": s3cr3t-unquoted-Zr9xK2mW7',
            'Unexpected token \'s\', ..."_secret": s3cr3t-unq"... is not valid JSON',
            f"Unexpected token 's', {PLACEHOLDER} is not valid JSON",
        ),
        # ... and near its end, the last characters.
        (
            "[11, 22, 33, 44, 55, 66, 77, 88, 99, zz9fK2m",
            "Unexpected token 'z', ...\", 88, 99, zz9fK2m\" is not valid JSON",
            f"Unexpected token 'z', {PLACEHOLDER} is not valid JSON",
        ),
        # A source under 21 characters is quoted whole.
        (
            "AKIAIOSFODNN7EXAMPLE",
            "Unexpected token 'A', \"AKIAIOSFODNN7EXAMPLE\" is not valid JSON",
            f"Unexpected token 'A', \"{PLACEHOLDER}\" is not valid JSON",
        ),
    ],
    ids=["start", "literal", "whitespace", "middle", "end", "short"],
)
def test_the_fragment_json_parse_quotes_is_redacted(value, message, expected):
    assert redacted(value, message) == expected
    # The message as code returns it (JSON.stringify({error: error.message})) too.
    output = redacted(value, json.dumps({"error": message}))
    assert PLACEHOLDER in output
    assert "9fK2" not in output and "sk_live" not in output and "s3cr3t" not in output


def test_the_first_characters_cpython_int_quotes_are_redacted():
    with pytest.raises(ValueError) as raised:
        int(PEM)
    message = f"ValueError: {raised.value}"
    assert len(message) < len(repr(PEM))  # int() quotes the first 200 characters only

    output = redacted(PEM, message)

    assert output == f"ValueError: invalid literal for int() with base 10: '{PLACEHOLDER}"


def test_the_first_characters_node_inspect_shows_of_a_long_value_are_redacted():
    value = "".join(hashlib.sha256(str(number).encode()).hexdigest() for number in range(200))
    # console.log({value}) in Node 20: strings are cut at 10,000 characters.
    inspected = "{\n  value: '" + value[:10_000] + "'... 2800 more characters\n}"

    output = redacted(value, inspected)

    assert value[:20] not in output and value[9_980:10_000] not in output
    assert PLACEHOLDER in output


# --- Multi-line values -------------------------------------------------------------------


@pytest.mark.parametrize(
    "leak",
    [
        lambda pem: pem.splitlines()[5],  # one line echoed alone
        lambda pem: "    " + pem.splitlines()[5] + "   ",
        lambda pem: pem.replace("\n", "\r\n"),  # CRLF line endings
        lambda pem: json.dumps(pem.replace("\n", "\r\n")),
        lambda pem: pem.strip(),  # without the trailing newline
        lambda pem: json.dumps({"key": pem.strip()}),
        lambda pem: pem.replace("\n", ""),  # line breaks removed (URL parsers)
        # console.log({pem}) in Node 20 prints a multi-line string line by line.
        lambda pem: (
            "{\n  pem: " + " +\n    ".join("'" + line + "\\n'" for line in pem.splitlines()) + "\n}"
        ),
        lambda pem: quote(pem.splitlines()[7], safe=""),
    ],
    ids=[
        "one line",
        "one line with whitespace",
        "crlf",
        "crlf json",
        "stripped",
        "stripped json",
        "joined",
        "node inspect",
        "one line url-encoded",
    ],
)
def test_no_line_of_a_multi_line_value_survives(leak):
    output = redacted(PEM, f"logs:\n{leak(PEM)}\nend")

    for line in PEM_BODY_LINES:
        assert line not in output
    assert PLACEHOLDER in output


def test_each_line_of_a_crlf_value_is_redacted_alone():
    value = PEM.replace("\n", "\r\n")
    output = redacted(value, f"line: {PEM_BODY_LINES[3]}\nline: {PEM_BODY_LINES[-1]}")
    assert output == f"line: {PLACEHOLDER}\nline: {PLACEHOLDER}"


def test_short_lines_and_pem_armor_are_not_forms():
    value = "ab\nsecret-line-1234\n  xy  \n-----BEGIN PRIVATE KEY-----"
    forms = encoded_forms(value)
    assert "secret-line-1234" in forms
    assert not {"ab", "xy", "-----BEGIN PRIVATE KEY-----"} & forms
    text = "ab and xy, -----BEGIN PRIVATE KEY----- of another key"
    assert redacted(value, text) == text


# --- Hexadecimal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "leak",
    [
        lambda value: value.encode().hex(),  # Python's bytes.hex(), Node's toString('hex')
        lambda value: value.encode().hex().upper(),
        lambda value: "00ff" + value.encode().hex() + "0d0a",  # inside a longer dump
        # console.log(Buffer.from(value)) in Node 20: the first 50 bytes.
        lambda value: (
            "<Buffer "
            + " ".join(f"{byte:02x}" for byte in value.encode()[:50])
            + f" ... {len(value.encode()) - 50} more bytes>"
        ),
    ],
    ids=["lower", "upper", "in a dump", "node buffer"],
)
def test_value_in_hexadecimal_is_redacted(leak):
    value = TOKEN + "-and-some-more-characters-past-fifty-bytes"
    text = f"bytes: {leak(value)}"

    output = redacted(value, text)

    assert value.encode()[:20].hex() not in output.lower()
    assert PLACEHOLDER in output


# --- What is left alone ------------------------------------------------------------------


def test_ordinary_text_without_a_secret_is_untouched():
    redactor = Redactor(
        [("Token", TOKEN), ("Webhook", WEBHOOK), ("PEM", PEM), ("Stripe", "sk_live_4eC39Hq")]
    )
    text = (
        "Unexpected token 'h', \"hello worl\"... is not valid JSON\n"
        "ValueError: invalid literal for int() with base 10: 'sk_test_other'\n"
        "POST https://hooks.example.com/services/T111/B111/another-path?token=other&x=1\n"
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
        '{"services": ["deploy", "webhooks"], "note": "sk_live and sk_test keys"}\n'
        '&lt;p&gt; %22quoted%22 \\"escaped\\" <Buffer 73 6b>'
    )
    assert redactor.redact_text(text) == text


@pytest.mark.parametrize("value", [TOKEN, WEBHOOK, PEM, "ab\ncd", "https://a:b@h/x?q=1"])
def test_no_form_is_shorter_than_the_minimum(value):
    shorter = {form for form in encoded_forms(value) if len(form) < MIN_FRAGMENT}
    assert shorter <= {value}
    # Parts (lines, URL parts, quoted prefixes) are only forms from MIN_PART characters.
    assert not {"ab", "cd", "a", "b", "q=1"} & encoded_forms(value)
    assert MIN_PART == 8


def test_a_value_has_a_bounded_number_of_forms():
    # Measured: 11 forms for a 32-character alphanumeric value, 105 for this 43-character
    # one with every kind of character to escape, 100 for a 1.8 KB PEM key. Each form is
    # a pattern of the automaton every run's redactor builds.
    assert len(encoded_forms("aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF")) < 20
    assert len(encoded_forms(TOKEN + "-padding-to-43")) < 150
    assert len(encoded_forms(PEM)) < 200
