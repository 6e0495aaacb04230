"""Settings come from the environment and fail loudly when something is missing or wrong."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parents[2]
PROBE = (
    "from django.conf import settings; "
    "print(settings.DEBUG, len(settings.FIELD_ENCRYPTION_KEY), settings.SECURE_SSL_REDIRECT)"
)


def _load_settings(
    tmp_path: Path, probe: str = PROBE, **environment: str
) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEY", "ALLOWED_HOSTS", "HTTPS_ONLY"}
    }
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "VAR_DIR": str(tmp_path)})
    env.update(environment)
    return subprocess.run(
        [sys.executable, "-c", probe], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )


def test_production_refuses_to_start_without_secret_key(tmp_path):
    result = _load_settings(
        tmp_path, DEBUG="0", FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode()
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_production_refuses_to_start_without_encryption_key(tmp_path):
    result = _load_settings(tmp_path, DEBUG="0", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY is not set" in result.stderr
    assert not list(tmp_path.iterdir()), "production must not generate keys"


def test_malformed_encryption_key_is_refused(tmp_path):
    result = _load_settings(tmp_path, DEBUG="0", SECRET_KEY="x" * 50, FIELD_ENCRYPTION_KEY="abc")
    assert result.returncode != 0
    assert "Fernet keys" in result.stderr


def test_production_with_keys_starts_https_only(tmp_path):
    keys = f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}"
    result = _load_settings(tmp_path, DEBUG="0", SECRET_KEY="x" * 50, FIELD_ENCRYPTION_KEY=keys)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "2", "True"]


def _redis_reachable() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


def test_the_cache_is_the_database_without_redis_url(tmp_path):
    probe = "from django.conf import settings; print(settings.CACHES['default']['BACKEND'])"
    result = _load_settings(tmp_path, probe, DEBUG="1", REDIS_URL="")
    assert result.stdout.strip() == "django.core.cache.backends.db.DatabaseCache", result.stderr


@pytest.mark.skipif(not _redis_reachable(), reason="no Redis server at 127.0.0.1:6379")
def test_throttle_counters_go_to_redis_with_redis_url(tmp_path):
    probe = (
        "import uuid; from django.conf import settings; from django.core.cache import cache; "
        "key = str(uuid.uuid4()); cache.set(key, 41, 10); "
        "print(settings.CACHES['default']['BACKEND'], cache.incr(key)); cache.delete(key)"
    )
    result = _load_settings(tmp_path, probe, DEBUG="1", REDIS_URL="redis://127.0.0.1:6379/15")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.core.cache.backends.redis.RedisCache", "42"]


def test_development_generates_keys_once(tmp_path):
    first = _load_settings(tmp_path, DEBUG="1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["True", "1", "False"]
    key_file = tmp_path / "field_encryption_key"
    generated = key_file.read_text()
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    second = _load_settings(tmp_path, DEBUG="1")
    assert second.returncode == 0
    assert key_file.read_text() == generated


def test_secret_from_file(tmp_path, monkeypatch):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("SOME_SECRET_FILE", str(secret_file))
    monkeypatch.delenv("SOME_SECRET", raising=False)
    assert env_str("SOME_SECRET") == "from-a-file"
    monkeypatch.setenv("SOME_SECRET", "also-set")
    with pytest.raises(ImproperlyConfigured, match="not both"):
        env_str("SOME_SECRET")


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("yes", True), ("0", False), ("off", False)]
)
def test_env_bool(monkeypatch, raw, expected):
    monkeypatch.setenv("A_FLAG", raw)
    assert env_bool("A_FLAG", not expected) is expected


def test_env_bool_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("A_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="A_FLAG must be a boolean"):
        env_bool("A_FLAG", False)


def test_env_int_and_list(monkeypatch):
    monkeypatch.setenv("A_NUMBER", "12")
    monkeypatch.setenv("A_LIST", " a.example , 127.0.0.1,,10.0.0.0/8 ")
    assert env_int("A_NUMBER", 1) == 12
    assert env_list("A_LIST") == ["a.example", "127.0.0.1", "10.0.0.0/8"]
    monkeypatch.setenv("A_NUMBER", "twelve")
    with pytest.raises(ImproperlyConfigured, match="A_NUMBER must be an integer"):
        env_int("A_NUMBER", 1)
