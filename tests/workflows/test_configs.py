from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from workflows.configs import clean_config, stored_references


def _errors(action_type, config) -> list[str]:
    with pytest.raises(ValidationError) as raised:
        clean_config(action_type, config)
    return [message for messages in raised.value.message_dict.values() for message in messages]


def test_send_api_request_is_normalized():
    config, references = clean_config(
        "send_api_request", {"method": "POST", "url": "https://api.test/{{inputs.id}}"}
    )
    assert config == {
        "method": "POST",
        "url": "https://api.test/{{inputs.id}}",
        "query": [],
        "headers": [],
        "body": {"type": "none"},
    }
    assert [field for field, _ in references] == ["config.url"]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"method": "TRACE", "url": "https://a.test"}, "config.method"),
        ({"url": "ftp://a.test"}, "config.url: must start with http"),
        (
            {"url": "https://a.test", "headers": [{"name": "Bad Name", "value": "x"}]},
            "config.headers[0].name",
        ),
        (
            {"url": "https://a.test", "headers": [{"name": "X", "value": "{{oops}}"}]},
            "config.headers[0].value",
        ),
        ({"url": "https://a.test", "query": "a=b"}, "config.query: must be a list"),
        (
            {"url": "https://a.test", "body": {"type": "raw", "raw": "{not json"}},
            "config.body.raw: is not valid JSON",
        ),
        ({"url": "https://a.test", "body": {"type": "xml"}}, "config.body.type"),
        ({"url": "https://a.test", "extra": 1}, "config.extra: is not a known setting"),
        (
            {"url": "https://a.test", "headers": [{"name": "X", "value": "v" * 9000}]},
            "at most 8,192",
        ),
    ],
)
def test_send_api_request_errors_name_the_field(config, fragment):
    assert any(fragment in message for message in _errors("send_api_request", config))


def test_raw_json_body_with_references_is_valid():
    config, references = clean_config(
        "send_api_request",
        {
            "url": "https://a.test",
            "method": "POST",
            "body": {"type": "raw", "raw": '{"token": "{{inputs.t}}", "n": {{steps.1.body.n}}}'},
        },
    )
    assert len(references) == 2


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"language": "ruby", "code": "x"}, "config.language"),
        ({"language": "python", "code": ""}, "config.code: is required"),
        (
            {
                "language": "python",
                "code": "return '{{secret:11111111-2222-3333-4444-555555555555}}'",
            },
            "cannot reference a secret key",
        ),
        (
            {"language": "python", "code": "x", "variables": [{"name": "1x", "value": ""}]},
            "valid identifier",
        ),
        (
            {
                "language": "python",
                "code": "x",
                "variables": [{"name": "a", "value": ""}, {"name": "a", "value": ""}],
            },
            "used twice",
        ),
    ],
)
def test_run_code_errors_name_the_field(config, fragment):
    assert any(fragment in message for message in _errors("run_code", config))


def test_code_itself_is_not_templated():
    config, references = clean_config(
        "run_code",
        {
            "language": "python",
            "code": "return f'{{x}}'",
            "variables": [{"name": "key", "value": "{{inputs.k}}"}],
        },
    )
    assert [field for field, _ in references] == ["config.variables[0].value"]


def test_stored_references_are_clean_configs_and_follow_the_config():
    config = {"method": "GET", "url": "https://api.test/{{inputs.id}}", "headers": []}
    assert stored_references("send_api_request", config) == tuple(
        clean_config("send_api_request", config)[1]
    )
    config["headers"] = [{"name": "X-Id", "value": "{{inputs.other}}"}]
    assert [field for field, _ in stored_references("send_api_request", config)] == [
        "config.url",
        "config.headers[0].value",
    ]


def test_a_stored_config_that_does_not_validate_fails_every_time():
    for _ in range(2):  # not remembered as valid after the first failure
        with pytest.raises(ValidationError):
            stored_references("send_api_request", {"method": "GET", "url": "{{oops}}"})
