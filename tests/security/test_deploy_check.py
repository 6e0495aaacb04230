"""`manage.py check --deploy` passes with production settings, without hiding anything.

Each check runs in its own process with the production settings module and only the
environment a deployment would give it, so nothing of the test settings leaks in.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

BASE_DIR = Path(__file__).resolve().parents[2]
SECURITY_PROBE = (
    "from django.conf import settings as s; "
    "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
    "s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER, s.SILENCED_SYSTEM_CHECKS)"
)


def _production_environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "secrets.example.com",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/15",
        "VAR_DIR": str(tmp_path),
    }
    environment.update(overrides)
    return environment


def _manage(tmp_path: Path, *arguments: str, **overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=BASE_DIR,
        env=_production_environment(tmp_path, **overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _deploy_check(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess:
    return _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **overrides)


def _security_settings(tmp_path: Path, **overrides: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {SECURITY_PROBE}"],
        cwd=BASE_DIR,
        env=_production_environment(tmp_path, **overrides),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_production_settings_pass_the_deploy_check_with_no_warning(tmp_path):
    result = _deploy_check(tmp_path)

    assert result.returncode == 0, result.stderr
    # The one silenced check is guardian.W001: its backend is replaced on purpose by
    # secretsapp.backends.AccessBackend.
    assert "System check identified no issues (1 silenced)." in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_production_defaults_redirect_to_https_and_secure_cookies_and_hsts(tmp_path):
    assert _security_settings(tmp_path) == "True True True 31536000 None ['guardian.W001']"


def test_behind_a_redirecting_tls_proxy_only_the_redirect_security_check_is_silenced(tmp_path):
    # HTTPS_ONLY=0: the proxy redirects plain HTTP itself; it declares TLS with
    # X-Forwarded-Proto. Cookies stay secure and HSTS on; of the security checks only W008
    # (no SSL redirect in the app) is silenced, and the check output says so (the other
    # silenced check is guardian.W001, as always).
    proxy = {"HTTPS_ONLY": "0", "TRUST_X_FORWARDED_PROTO": "1"}

    result = _deploy_check(tmp_path, **proxy)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (2 silenced)." in result.stdout
    assert _security_settings(tmp_path, **proxy) == (
        "False True True 31536000 ('HTTP_X_FORWARDED_PROTO', 'https') "
        "['guardian.W001', 'security.W008']"
    )


def test_plain_http_without_a_proxy_still_warns(tmp_path):
    # Nothing silences the warnings of a deployment that really serves plain HTTP.
    result = _deploy_check(tmp_path, HTTPS_ONLY="0")

    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


@pytest.mark.parametrize(
    ("secret_key", "check"),
    [("short-and-weak", "security.W009"), ("django-insecure-" + "x" * 50, "security.W009")],
)
def test_a_weak_secret_key_fails_the_deploy_check(tmp_path, secret_key, check):
    result = _deploy_check(tmp_path, SECRET_KEY=secret_key)

    assert result.returncode != 0
    assert check in result.stderr
