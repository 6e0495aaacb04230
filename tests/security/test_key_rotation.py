"""Rotating FIELD_ENCRYPTION_KEY loses nothing, and a wrong key fails loudly.

django-encrypted-model-fields builds its MultiFernet once, at import
(``encrypted_model_fields.fields.CRYPTER``), so these tests change the keys the way a
restart with a new FIELD_ENCRYPTION_KEY would: new settings, and the crypter rebuilt from
them with the library's own ``get_crypter()``. One test runs the real thing end to end:
``manage.py`` processes with the keys in the environment.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.management import CommandError, call_command
from django.db import connection
from encrypted_model_fields import fields as encrypted_fields

from secretsapp import services
from secretsapp.fields import SecretDecryptionError
from secretsapp.models import SecretKey
from tests.conftest import TEAM_VALUE, Personas, api_client_for, http_action
from workflows import services as workflow_services
from workflows.models import Run, RunStep

BASE_DIR = Path(__file__).resolve().parents[2]
EXTRA_KEY_COUNT = 3


@pytest.fixture
def old_key(settings) -> str:
    """The key every fixture value was encrypted with (the test settings' only key)."""
    assert len(settings.FIELD_ENCRYPTION_KEY) == 1
    return settings.FIELD_ENCRYPTION_KEY[0]


@pytest.fixture
def new_key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
def use_keys(settings, monkeypatch):
    """Configure FIELD_ENCRYPTION_KEY as a restart would: settings, then the crypter."""

    def configure(*keys: str) -> None:
        settings.FIELD_ENCRYPTION_KEY = list(keys)
        monkeypatch.setattr(encrypted_fields, "CRYPTER", encrypted_fields.get_crypter())

    return configure


@pytest.fixture
def stored_values(personas: Personas) -> dict[uuid.UUID, str]:
    """Five keys (the personas' two and three more), by id, with their plaintext values."""
    values = {
        personas.restricted_key.pk: SecretKey.objects.get(pk=personas.restricted_key.pk).value,
        personas.team_key.pk: TEAM_VALUE,
    }
    for number in range(EXTRA_KEY_COUNT):
        value = f"extra-value-{number}-{uuid.uuid4()}"
        secret_key = services.create_secret_key(personas.admin, name=f"Extra {number}", value=value)
        values[secret_key.pk] = value
    return values


def _raw_tokens() -> dict[uuid.UUID, str]:
    """The encrypted column as stored, without going through the field."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, value FROM {SecretKey._meta.db_table}")
        return {uuid.UUID(str(pk)): token for pk, token in cursor.fetchall()}


def _set_raw_token(secret_key_id: uuid.UUID, token: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SecretKey._meta.db_table} SET value = %s WHERE id = %s",
            [token, SecretKey._meta.pk.get_db_prep_value(secret_key_id, connection)],
        )


def _decryptable_by(key: str, tokens: dict[uuid.UUID, str]) -> set[uuid.UUID]:
    fernet = Fernet(key)
    readable = set()
    for secret_key_id, token in tokens.items():
        try:
            fernet.decrypt(token.encode())
        except InvalidToken:
            continue
        readable.add(secret_key_id)
    return readable


def _rotate(*arguments: str) -> str:
    output = io.StringIO()
    call_command("rotate_encryption_key", *arguments, stdout=output, stderr=io.StringIO())
    return output.getvalue()


def test_rotation_reencrypts_every_value_so_the_old_key_can_be_dropped(
    stored_values, old_key, new_key, use_keys
):
    before = _raw_tokens()
    use_keys(new_key, old_key)

    output = _rotate("--batch-size", "2")

    assert "5 rotated, 0 already current, 0 failed (2 key(s) configured)." in output
    after = _raw_tokens()
    assert set(after) == set(stored_values)
    assert all(after[secret_key_id] != before[secret_key_id] for secret_key_id in after)
    assert _decryptable_by(new_key, after) == set(stored_values)
    assert _decryptable_by(old_key, after) == set()
    # The old key is gone: every value still reads back as it was saved.
    use_keys(new_key)
    for secret_key in SecretKey.objects.defer(None):
        assert secret_key.value == stored_values[secret_key.pk]


def test_rerunning_a_finished_rotation_changes_nothing(stored_values, old_key, new_key, use_keys):
    use_keys(new_key, old_key)
    _rotate()
    rotated_tokens = _raw_tokens()

    output = _rotate()

    assert "0 rotated, 5 already current, 0 failed" in output
    assert _raw_tokens() == rotated_tokens


def test_an_interrupted_rotation_keeps_finished_batches_and_a_rerun_completes_it(
    stored_values, old_key, new_key, use_keys, monkeypatch
):
    use_keys(new_key, old_key)
    original_rotate = MultiFernet.rotate
    calls = []

    def crash_in_the_second_batch(self, token):
        calls.append(token)
        if len(calls) == 4:  # batch 1 = rows 1–2; row 3 is written, then the crash
            raise RuntimeError("the machine went away")
        return original_rotate(self, token)

    monkeypatch.setattr(MultiFernet, "rotate", crash_in_the_second_batch)
    with pytest.raises(RuntimeError, match="went away"):
        _rotate("--batch-size", "2")
    # The first batch was committed; the second was rolled back with its written row.
    assert len(_decryptable_by(new_key, _raw_tokens())) == 2
    assert len(_decryptable_by(old_key, _raw_tokens())) == 3

    monkeypatch.setattr(MultiFernet, "rotate", original_rotate)
    output = _rotate("--batch-size", "2")

    assert "3 rotated, 2 already current, 0 failed" in output
    use_keys(new_key)
    for secret_key in SecretKey.objects.defer(None):
        assert secret_key.value == stored_values[secret_key.pk]


def test_a_value_no_configured_key_decrypts_fails_the_command_and_stays_untouched(
    stored_values, personas, old_key, new_key, use_keys
):
    foreign_token = Fernet(Fernet.generate_key()).encrypt(b"from another deployment").decode()
    _set_raw_token(personas.team_key.pk, foreign_token)
    use_keys(new_key, old_key)
    errors = io.StringIO()

    with pytest.raises(CommandError, match="1 value\\(s\\) could not be decrypted") as raised:
        call_command("rotate_encryption_key", stdout=io.StringIO(), stderr=errors)

    assert raised.value.returncode != 0  # manage.py exits with it
    assert f"secretsapp.SecretKey {personas.team_key.pk}" in errors.getvalue()
    assert foreign_token not in errors.getvalue()
    tokens = _raw_tokens()
    assert tokens[personas.team_key.pk] == foreign_token
    # Everything else was rotated all the same.
    assert _decryptable_by(new_key, tokens) == set(stored_values) - {personas.team_key.pk}


def test_dry_run_counts_and_writes_nothing(stored_values, old_key, new_key, use_keys):
    before = _raw_tokens()
    use_keys(new_key, old_key)

    output = _rotate("--dry-run", "--batch-size", "3")

    assert "Dry run, nothing written: 5 would be rotated, 0 already current" in output
    assert _raw_tokens() == before


def test_rotation_refuses_to_run_when_the_crypter_in_use_does_not_match_the_settings(
    stored_values, old_key, new_key, settings
):
    # New settings but the crypter of the running code built from the old ones: rotating
    # would write tokens this process treats differently. Nothing may change.
    before = _raw_tokens()
    settings.FIELD_ENCRYPTION_KEY = [new_key, old_key]

    with pytest.raises(CommandError, match="does not match"):
        _rotate()

    assert _raw_tokens() == before


def test_batch_size_must_be_positive(db):
    with pytest.raises(CommandError, match="at least 1"):
        _rotate("--batch-size", "0")


def test_after_dropping_the_key_in_use_reading_a_value_fails_loudly(
    stored_values, personas, old_key, new_key, use_keys
):
    use_keys(new_key, old_key)
    _rotate()
    use_keys(old_key)  # the new key dropped by mistake

    with pytest.raises(SecretDecryptionError, match="cannot be decrypted") as raised:
        SecretKey.objects.defer(None).get(pk=personas.team_key.pk).value  # noqa: B018
    assert _raw_tokens()[personas.team_key.pk] not in str(raised.value)


def test_a_run_with_a_wrong_key_fails_clearly_and_sends_nothing(
    stored_values, personas, old_key, new_key, use_keys, echo_server
):
    workflow = workflow_services.create_workflow(personas.member_use, name="Notify")
    reference = personas.team_key.reference
    action = workflow_services.create_action(
        personas.member_use,
        workflow,
        name="Post",
        action_type="send_api_request",
        config=http_action(
            f"{echo_server.url}/echo?key={reference}",
            method="POST",
            headers=[{"name": "Authorization", "value": f"Bearer {reference}"}],
        ),
    )
    use_keys(new_key, old_key)
    _rotate()
    use_keys(Fernet.generate_key().decode())  # none of the keys the values need
    tokens = _raw_tokens()

    response = api_client_for(personas.member_use).post(
        f"/api/v1/actions/{action.pk}/execute/", {"inputs": {}}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert "cannot be decrypted" in response.json()["error"]
    assert echo_server.requests == []
    stored = str(list(Run.objects.values())) + str(list(RunStep.objects.values()))
    for token in tokens.values():
        assert token not in response.content.decode()
        assert token not in stored


def test_rotation_end_to_end_with_keys_from_the_environment(tmp_path):
    """The real processes: the crypter built at import from FIELD_ENCRYPTION_KEY."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "FIELD_ENCRYPTION_KEY", "DJANGO_SETTINGS_MODULE"}
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings_test",
        DATABASE_URL=f"sqlite:///{tmp_path / 'rotation.sqlite3'}",
        VAR_DIR=str(tmp_path),
    )

    def manage(keys: str, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *arguments],
            cwd=BASE_DIR,
            env={**environment, "FIELD_ENCRYPTION_KEY": keys},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def shell(keys: str, code: str) -> subprocess.CompletedProcess:
        return manage(keys, "shell", "--no-imports", "-c", code)

    assert manage(old, "migrate", "--no-input").returncode == 0
    created = shell(
        old,
        "from secretsapp.models import Organization, SecretKey\n"
        "organization = Organization.objects.create(name='Acme')\n"
        "for number in range(3):\n"
        "    SecretKey.objects.create(organization=organization, name=f'k{number}', "
        "value=f'value-{number}')\n",
    )
    assert created.returncode == 0, created.stderr

    rotated = manage(f"{new},{old}", "rotate_encryption_key", "--batch-size", "2")
    assert rotated.returncode == 0, rotated.stderr
    assert "3 rotated, 0 already current, 0 failed" in rotated.stdout

    read_back = shell(
        new,
        "from secretsapp.models import SecretKey\n"
        "print(sorted(key.value for key in SecretKey.objects.defer(None)))",
    )
    assert read_back.returncode == 0, read_back.stderr
    assert read_back.stdout.strip() == "['value-0', 'value-1', 'value-2']"

    # A key nobody configured any more: the command says which row and exits non-zero.
    failed = manage(Fernet.generate_key().decode(), "rotate_encryption_key")
    assert failed.returncode == 1
    assert failed.stderr.count("cannot be decrypted with any key") == 3
