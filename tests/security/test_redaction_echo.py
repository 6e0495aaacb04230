"""Values that come back changed, through real runs: a target on 127.0.0.1 that answers
with the request JSON-encoded once more or with a URL key's parts parsed, and Run Code in
the real sandbox (Python and Node.js) printing, returning and failing on a PEM key's line,
its CRLF variant, a value in hexadecimal and the parser errors that quote a value.

Every run is made through the API; its answer, the run as the API shows it later and the
stored Run and RunStep rows must hold no part of any value: no 8-character piece of it,
in any of the forms the canary scan looks for (tests/security/crawl.py).
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import pytest

from secretsapp import services as secret_services
from secretsapp.models import SecretKey
from tests.conftest import Personas, api_client_for, code_action, http_action, pem_key
from tests.security.crawl import Canary, LeakScanner
from workflows import services as workflow_services
from workflows.models import Run, RunStep
from workflows.redaction import MIN_PART, Redactor
from workflows.sandbox import run_code

TOKEN = 'sk_test_Zq8fK2mW7xLp"q\\x/é-91'
# A JSON credential pasted with a quote missing: JSON.parse quotes its middle.
BROKEN_JSON = '{"client_id": "abc", "client_secret": s3cr3t-unquoted-Zr9xK2mW7}'


PEM = pem_key(b"redaction echo")
PEM_BODY_LINES = PEM.splitlines()[1:-1]


def _pieces(*texts: str) -> list[Canary]:
    """Every piece of MIN_PART characters of the texts, each a canary of its own."""
    return [
        Canary(f"{text[:12]}…[{start}:{start + MIN_PART}]", text[start : start + MIN_PART])
        for text in texts
        for start in range(len(text) - MIN_PART + 1)
    ]


# A URL key's path ends at this server's /parsed/, its parts of 8 characters or more are
# secret (services, T000, B000 and x=1 are not).
URL_TAIL = "/parsed/services/T000/B000/XXXXsecretpath?token=abcdefgh12345&sig=Zx9%2Fq%2Bv8kLmn&x=1"
URL_PARTS = ["XXXXsecretpath", "abcdefgh12345", "Zx9/q+v8kLmn"]
SECRET_PIECES = _pieces(TOKEN, BROKEN_JSON, *PEM_BODY_LINES, *URL_PARTS)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _reference(secret_key: SecretKey) -> str:
    return f"{{{{secret:{secret_key.pk}}}}}"


def _execute(personas: Personas, config: dict, action_type: str) -> dict[str, Any]:
    """Run one action through the API; return its answer, after checking that nothing
    shown or stored about the run holds a piece of a value."""
    workflow = workflow_services.create_workflow(personas.admin, name=f"Echo {action_type}")
    action = workflow_services.create_action(
        personas.admin, workflow, name="Echo", action_type=action_type, config=config
    )
    client = api_client_for(personas.admin)
    response = client.post(f"/api/v1/actions/{action.pk}/execute/", {}, format="json")
    assert response.status_code == 200, response.content
    answer = response.json()
    shown = client.get(f"/api/v1/runs/{answer['run_id']}/")
    assert shown.status_code == 200
    texts = {
        "execute answer": answer,
        "run as shown": shown.json(),
        "stored run": list(Run.objects.filter(pk=answer["run_id"]).values()),
        "stored steps": list(RunStep.objects.filter(run_id=answer["run_id"]).values()),
    }
    scanner = LeakScanner(SECRET_PIECES)
    for where, value in texts.items():
        for text in _strings(value):
            scanner.scan("run", where, text)
    assert not scanner.hits, scanner.report()
    assert "[redacted:" in json.dumps(answer)
    return answer


# --- Targets that echo what they got, changed --------------------------------------------


class _ChangingEchoHandler(BaseHTTPRequestHandler):
    """POST /double → 400, text/plain: the body JSON-encoded once more (as is, HTML-escaped
    and URL-encoded), a common error format; GET /parsed/... → the path's segments and the
    query's values, decoded, as JSON."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        self.server.requests.append({"path": self.path, "body": body})
        encoded = json.dumps(body)
        text = f"bad request: {encoded}\n{html.escape(encoded)}\n{quote(encoded, safe='')}"
        self._send(400, "text/plain", text)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self.server.requests.append({"path": self.path, "body": ""})
        parsed = {
            "segments": [unquote(segment) for segment in path.split("/")],
            "query": dict(parse_qsl(query)),
            "raw": self.path,
        }
        self._send(200, "application/json", json.dumps(parsed))

    def _send(self, status: int, content_type: str, text: str) -> None:
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def changing_echo() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChangingEchoHandler)
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def keys(personas: Personas, changing_echo: ThreadingHTTPServer) -> dict[str, SecretKey]:
    values = {
        "token": TOKEN,
        "pem": PEM,
        "broken": BROKEN_JSON,
        "webhook": changing_echo.url + URL_TAIL,
    }
    return {
        name: secret_services.create_secret_key(personas.admin, name=f"Echo {name}", value=value)
        for name, value in values.items()
    }


def test_a_body_echoed_json_encoded_twice_keeps_no_part_of_the_value(
    personas: Personas, keys: dict[str, SecretKey], changing_echo: ThreadingHTTPServer
) -> None:
    config = http_action(
        f"{changing_echo.url}/double",
        method="POST",
        body={
            "type": "raw",
            "raw": '{"token": "TOKEN", "key": "PEM", "note": "sent"}'.replace(
                "TOKEN", _reference(keys["token"])
            ).replace("PEM", _reference(keys["pem"])),
        },
    )

    answer = _execute(personas, config, "send_api_request")

    assert answer["status"] == "succeeded" and answer["output"]["status_code"] == 400
    received = json.loads(changing_echo.requests[0]["body"])
    assert received == {"token": TOKEN, "key": PEM, "note": "sent"}
    assert "bad request" in answer["output"]["body"]


def test_a_url_key_echoed_parsed_keeps_no_part_of_it(
    personas: Personas, keys: dict[str, SecretKey], changing_echo: ThreadingHTTPServer
) -> None:
    answer = _execute(personas, http_action(_reference(keys["webhook"])), "send_api_request")

    assert answer["status"] == "succeeded"
    assert changing_echo.requests[0]["path"] == URL_TAIL
    # The parts too short or too plain to be secrets are still there.
    assert answer["output"]["body"]["segments"][:5] == ["", "parsed", "services", "T000", "B000"]
    assert answer["output"]["body"]["query"]["x"] == "1"


# --- Run Code, in the real sandbox -------------------------------------------------------

PYTHON_PRINTS = """
import base64, datetime, json
pem, token, broken = variables['pem'], variables['token'], variables['broken']
print(pem.splitlines()[3])
print(pem.replace('\\n', '\\r\\n'), end='')
print(repr(pem.replace('\\n', '\\r\\n')))
print(pem.strip() + '|')
print(token.encode().hex(), token.encode().hex().upper(), token.encode())
errors = []
parsers = [int, float, complex, json.loads, datetime.datetime.fromisoformat, bytes.fromhex,
           lambda text: base64.b64decode(text, validate=True)]
for text in (token, broken, pem):
    for parse in parsers:
        try:
            parse(text)
        except Exception as error:
            errors.append(f'{type(error).__name__}: {error}')
print(errors)
return {'line': pem.splitlines()[5], 'crlf': pem.replace('\\n', '\\r\\n'),
        'stripped': pem.strip(), 'hex': token.encode().hex().upper(), 'errors': errors}
"""

JAVASCRIPT_PRINTS = """
const { pem, token, broken } = variables;
const crlf = pem.replace(/\\n/g, '\\r\\n');
console.log(pem.split('\\n')[3]);
console.log(crlf);
console.log(pem.trim() + '|');
console.log({ pem, crlf });
console.log(Buffer.from(token).toString('hex'), Buffer.from(token).toString('hex').toUpperCase());
console.log(Buffer.from(token), Buffer.from(pem));
const errors = [];
const parsers = [JSON.parse, BigInt, (text) => new URL(text)];
for (const text of [token, broken, pem]) {
  for (const parse of parsers) {
    try { parse(text); } catch (error) { errors.push(String(error)); }
  }
}
console.log(errors);
return { line: pem.split('\\n')[5], crlf, hex: Buffer.from(token).toString('hex'), errors };
"""

FAILURES = {
    "python": [
        "int(variables['pem'])",
        "float(variables['token'])",
        "raise ValueError(variables['pem'].splitlines()[2])",
    ],
    "javascript": [
        "JSON.parse(variables.token);",
        "JSON.parse(variables.broken);",
        "throw new Error(variables.pem.split('\\n')[2]);",
    ],
}


def _variables(keys: dict[str, SecretKey]) -> dict[str, str]:
    return {name: _reference(keys[name]) for name in ("pem", "token", "broken")}


@pytest.mark.parametrize(
    ("language", "code"), [("python", PYTHON_PRINTS), ("javascript", JAVASCRIPT_PRINTS)]
)
def test_code_printing_and_returning_changed_values_keeps_no_part_of_them(
    personas: Personas, keys: dict[str, SecretKey], language: str, code: str
) -> None:
    answer = _execute(personas, code_action(code, language, **_variables(keys)), "run_code")

    assert answer["status"] == "succeeded", answer["error"]
    assert len(answer["output"]["result"]["errors"]) >= 6


@pytest.mark.parametrize(
    ("language", "code"),
    [(language, code) for language, codes in FAILURES.items() for code in codes],
)
def test_code_failing_on_a_value_keeps_no_part_of_it(
    personas: Personas, keys: dict[str, SecretKey], language: str, code: str
) -> None:
    answer = _execute(personas, code_action(code, language, **_variables(keys)), "run_code")

    assert answer["status"] == "failed"
    assert "[redacted:" in answer["error"]


def test_every_json_parse_error_node_quotes_is_redacted() -> None:
    """V8's message for a value of each shape, against the fragment redaction computes for
    it: the first characters, the middle or the end, after whitespace, a literal or a
    bracket; or no fragment at all."""
    values = [
        "sk_live_4eC39HqLyjWDarjtT1zdp7dcQw",
        "test-token-9fK2mW7xLpQ4Rt",
        "nullable-9fK2mW7xLpQ4Rt5Ab",
        "  \t\nsecret after whitespace 9fK2",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
        "[11, 22, 33, 44, 55, 66, 77, 88, 99, 1010, zz9fK2mW7xLp, 3]",
        "[11, 22, 33, 44, 55, 66, 77, 88, 99, 1010, NaN, 9fK2mW7xLp]",
        "[true, false, null, tru9fK2mW7xLpQ4Rt5Ab]",
        BROKEN_JSON,
        '{"a": [1, 2, {"b": x9fK2mW7xLpQ4Rt5Ab}]}',
        "[11, 22, 33, 44, 55, 66, 77, 88, 99, zz9fK2m",
        "12345-9fK2mW7xLpQ4Rt5Ab-no-context",
        '"quote left open 9fK2mW7xLpQ4Rt5Ab',
        PEM,
    ]
    code = """
const messages = [];
for (const value of variables.values) {
  try { JSON.parse(value); messages.push(null); } catch (error) { messages.push(error.message); }
}
return messages;
"""
    messages = run_code("javascript", code, {"values": values})["result"]

    for value, message in zip(values, messages, strict=True):
        assert message is not None, value
        output = Redactor([("Value", value)]).redact_text(message)
        scanner = LeakScanner(_pieces(value.strip()))
        scanner.scan("message", f"JSON.parse({value!r})", output)
        assert not scanner.hits, (message, output)
