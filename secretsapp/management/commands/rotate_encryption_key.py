"""Re-encrypt every stored secret value with the first key of FIELD_ENCRYPTION_KEY.

Rotation: put the new key first in FIELD_ENCRYPTION_KEY (keep the old ones after it),
restart the app servers, run this command, then drop the old keys. Each value is rotated
Fernet token to Fernet token (``MultiFernet.rotate``): the command reads and writes the
raw column, so no value is ever handed to Django as plaintext, and nothing is logged but
ids and counts.

Batches run in their own transactions, in primary-key order, with their rows locked, so an
interrupted run keeps what it finished and a rerun only rotates what is left: a token that
the first key already decrypts is current and is left alone. A token that no configured key
decrypts is reported by id, left untouched, and makes the command exit non-zero.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, models, router, transaction
from django.db.models import ExpressionWrapper, F, TextField
from encrypted_model_fields import fields as encrypted_fields

DEFAULT_BATCH_SIZE = 500
# Encrypted with the command's keys and decrypted with the app's crypter (and back), to
# prove both agree before anything is written.
_PROBE = b"rotate_encryption_key probe"


def _positive_int(raw: str) -> int:
    try:
        number = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


@dataclass
class RotationReport:
    rotated: int = 0
    already_current: int = 0
    # Rows whose token changed between reading and writing (another writer got there
    # first): not rotated by this run, a rerun looks at them again.
    changed_meanwhile: int = 0
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Keys:
    first: Fernet
    all: MultiFernet
    count: int


def configured_keys() -> _Keys:
    """The keys of FIELD_ENCRYPTION_KEY, checked against the crypter the app uses."""
    raw_keys = settings.FIELD_ENCRYPTION_KEY
    if isinstance(raw_keys, str | bytes):
        raw_keys = [raw_keys]
    try:
        fernets = [Fernet(key) for key in raw_keys]
    except (TypeError, ValueError) as error:
        raise CommandError(f"FIELD_ENCRYPTION_KEY holds a malformed key: {error}") from None
    if not fernets:
        raise CommandError("FIELD_ENCRYPTION_KEY is empty.")
    keys = _Keys(first=fernets[0], all=MultiFernet(fernets), count=len(fernets))
    # django-encrypted-model-fields builds its crypter once, at import. If it does not
    # encrypt with our first key (or cannot read what we write), rotating would write
    # tokens the running code treats differently: stop before touching anything.
    app_crypter = encrypted_fields.CRYPTER
    try:
        keys.first.decrypt(app_crypter.encrypt(_PROBE))
        app_crypter.decrypt(keys.first.encrypt(_PROBE))
    except InvalidToken:
        raise CommandError(
            "The encryption in use does not match the first key of FIELD_ENCRYPTION_KEY; "
            "nothing was changed."
        ) from None
    return keys


def encrypted_fields_of_all_models() -> Iterator[tuple[type[models.Model], models.Field]]:
    for model in apps.get_models():
        for model_field in model._meta.concrete_fields:
            if isinstance(model_field, encrypted_fields.EncryptedMixin):
                yield model, model_field


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret value with the first key of FIELD_ENCRYPTION_KEY "
        "(put the new key first, run this, then drop the old keys). Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=_positive_int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows per transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be rotated or would fail; write nothing.",
        )

    def handle(self, *args: Any, batch_size: int, dry_run: bool, **options: Any) -> None:
        keys = configured_keys()
        report = RotationReport()
        for model, model_field in encrypted_fields_of_all_models():
            self.rotate_field(model, model_field, keys, batch_size, dry_run, report)

        verb = "would be rotated" if dry_run else "rotated"
        summary = (
            f"{report.rotated} {verb}, {report.already_current} already current, "
            f"{len(report.failed)} failed ({keys.count} key(s) configured)."
        )
        if dry_run:
            summary = f"Dry run, nothing written: {summary}"
        self.stdout.write(summary)
        if report.changed_meanwhile:
            self.stdout.write(
                f"{report.changed_meanwhile} value(s) changed while the command ran; "
                "run it again to check them."
            )
        if report.failed:
            for label in report.failed:
                self.stderr.write(
                    f"Failed: {label} cannot be decrypted with any key in "
                    "FIELD_ENCRYPTION_KEY; left unchanged."
                )
            raise CommandError(
                f"{len(report.failed)} value(s) could not be decrypted with any configured "
                "key (add the key they were encrypted with, then run the command again)."
            )

    def rotate_field(
        self,
        model: type[models.Model],
        model_field: models.Field,
        keys: _Keys,
        batch_size: int,
        dry_run: bool,
        report: RotationReport,
    ) -> None:
        database = router.db_for_write(model)
        # The column as stored: an annotation with a plain TextField output skips the
        # encrypted field's decryption on read.
        token = ExpressionWrapper(F(model_field.attname), output_field=TextField())
        last_pk = None
        while True:
            with transaction.atomic(using=database):
                rows = model._base_manager.using(database).annotate(stored_token=token)
                rows = rows.order_by("pk")
                if last_pk is not None:
                    rows = rows.filter(pk__gt=last_pk)
                if not dry_run:
                    rows = rows.select_for_update()
                batch = list(rows.values_list("pk", "stored_token")[:batch_size])
                if not batch:
                    return
                self.rotate_batch(model, model_field, database, batch, keys, dry_run, report)
            last_pk = batch[-1][0]

    def rotate_batch(
        self,
        model: type[models.Model],
        model_field: models.Field,
        database: str,
        batch: list[tuple[Any, str | None]],
        keys: _Keys,
        dry_run: bool,
        report: RotationReport,
    ) -> None:
        for pk, stored in batch:
            if stored is None:
                continue
            stored_bytes = stored.encode()
            try:
                keys.first.decrypt(stored_bytes)
            except InvalidToken:
                pass
            else:
                # Rotating again would only change the token: skipping keeps reruns no-ops.
                report.already_current += 1
                continue
            try:
                rotated = keys.all.rotate(stored_bytes).decode()
            except InvalidToken:
                report.failed.append(f"{model._meta.label} {pk}")
                continue
            if dry_run:
                report.rotated += 1
                continue
            # Written only if the token is still the one read: a value saved meanwhile
            # is never overwritten with the rotation of its old version.
            if _write_token(model, model_field, database, pk, stored, rotated):
                report.rotated += 1
            else:
                report.changed_meanwhile += 1


def _write_token(
    model: type[models.Model],
    model_field: models.Field,
    database: str,
    pk: Any,
    stored: str,
    rotated: str,
) -> bool:
    """Replace the stored token ``stored`` with ``rotated``, as they are.

    Raw SQL because the encrypted field encrypts whatever an ORM update hands it (an
    expression too, as its repr), and the token is already encrypted.
    """
    connection = connections[database]
    quote = connection.ops.quote_name
    meta = model._meta
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {quote(model_field.column)} = %s "
            f"WHERE {quote(meta.pk.column)} = %s AND {quote(model_field.column)} = %s",
            [rotated, meta.pk.get_db_prep_value(pk, connection), stored],
        )
        return cursor.rowcount == 1
