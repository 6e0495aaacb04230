from __future__ import annotations

from django.apps import AppConfig


class SecretsappConfig(AppConfig):
    name = "secretsapp"
    verbose_name = "Organization and secret keys"
