"""The encrypted field for secret values, made strict.

django-encrypted-model-fields encrypts with the ``MultiFernet`` built from
``FIELD_ENCRYPTION_KEY``, but on a decryption failure it hands back the ciphertext as if it
were the value, and it tries to *decrypt* plaintext handed to ``to_python``. Both are
dangerous for a secrets store: a wrong key would send ciphertext to a third party, and a
user's value that happens to be a Fernet token would be silently transformed. This field
keeps the library's encryption but decrypts only what comes from the database, and fails
loudly when that does not work.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import InvalidToken
from django.db import models
from encrypted_model_fields import fields as encrypted_fields


class SecretDecryptionError(Exception):
    """A stored value could not be decrypted with any configured FIELD_ENCRYPTION_KEY."""


class StrictEncryptedTextField(encrypted_fields.EncryptedTextField):
    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        try:
            # Looked up on the module at call time so a rotated crypter takes effect.
            return encrypted_fields.decrypt_str(value)
        except InvalidToken:
            raise SecretDecryptionError(
                f"A stored value of {self.model.__name__}.{self.name} cannot be decrypted with "
                "any key in FIELD_ENCRYPTION_KEY. Check that the key it was encrypted with is "
                "configured; the ciphertext is never used as a value."
            ) from None

    def to_python(self, value: Any) -> Any:
        # Plaintext from forms and full_clean() stays as it is: never attempt to decrypt it.
        return models.TextField.to_python(self, value)
