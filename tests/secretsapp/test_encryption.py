"""Values are ciphertext at rest, and a wrong key fails loudly instead of leaking ciphertext."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet, MultiFernet
from django.core.management import call_command
from django.db import connection
from encrypted_model_fields import fields as encrypted_fields

from secretsapp import services
from secretsapp.fields import SecretDecryptionError
from secretsapp.models import SecretKey
from tests.conftest import RESTRICTED_VALUE, Personas


def _raw_value(secret_key: SecretKey) -> str:
    # The 32-digit hex form matches both SQLite's char(32) and PostgreSQL's uuid column.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT value FROM {SecretKey._meta.db_table} WHERE id = %s", [secret_key.pk.hex]
        )
        return cursor.fetchone()[0]


def test_value_is_stored_as_ciphertext(personas: Personas):
    raw = _raw_value(personas.restricted_key)
    assert raw.startswith("gAAAAA")
    assert RESTRICTED_VALUE not in raw
    assert encrypted_fields.decrypt_str(raw) == RESTRICTED_VALUE


def test_value_reads_back_decrypted(personas: Personas):
    secret_key = SecretKey.objects.get(pk=personas.restricted_key.pk)
    assert secret_key.value == RESTRICTED_VALUE


def test_lists_do_not_decrypt_values(personas: Personas, monkeypatch):
    def refuse(token):
        raise AssertionError("a list decrypted a value")

    monkeypatch.setattr(encrypted_fields, "decrypt_str", refuse)
    names = [key.name for key in SecretKey.objects.for_user(personas.admin)]
    assert sorted(names) == ["Slack webhook", "Stripe live"]


def test_wrong_encryption_key_raises_instead_of_returning_ciphertext(
    personas: Personas, monkeypatch
):
    monkeypatch.setattr(encrypted_fields, "CRYPTER", MultiFernet([Fernet(Fernet.generate_key())]))
    with pytest.raises(SecretDecryptionError, match="cannot be decrypted"):
        SecretKey.objects.get(pk=personas.restricted_key.pk).value  # noqa: B018


def test_decryption_error_message_holds_no_ciphertext(personas: Personas, monkeypatch):
    raw = _raw_value(personas.restricted_key)
    monkeypatch.setattr(encrypted_fields, "CRYPTER", MultiFernet([Fernet(Fernet.generate_key())]))
    with pytest.raises(SecretDecryptionError) as raised:
        SecretKey.objects.get(pk=personas.restricted_key.pk).value  # noqa: B018
    assert raw not in str(raised.value)
    assert raised.value.__cause__ is None


def test_old_key_still_decrypts_after_new_key_is_put_first(personas: Personas, monkeypatch):
    old_crypter = encrypted_fields.CRYPTER
    new_key = Fernet(Fernet.generate_key())
    monkeypatch.setattr(encrypted_fields, "CRYPTER", MultiFernet([new_key, *old_crypter._fernets]))
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).value == RESTRICTED_VALUE


def test_value_that_looks_like_a_fernet_token_is_kept_as_typed(personas: Personas):
    token_like = encrypted_fields.encrypt_str("inner").decode()
    secret_key = services.create_secret_key(personas.admin, name="Token-like", value=token_like)
    assert SecretKey.objects.get(pk=secret_key.pk).value == token_like


def test_dumpdata_never_exports_values(personas: Personas):
    output = io.StringIO()
    call_command("dumpdata", "secretsapp.secretkey", stdout=output)
    assert personas.restricted_key.name in output.getvalue()
    assert RESTRICTED_VALUE not in output.getvalue()
    assert '"value"' not in output.getvalue()
