"""Test settings: the production settings with only what tests need overridden."""

from __future__ import annotations

import os

# Fixed, throw-away keys so tests never touch a developer's generated keys in var/.
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("FIELD_ENCRYPTION_KEY", "t7r1I0O0bqvpD9OD3W8QmfXH4iTqXv0l5m8Y9f2oCk0=")
os.environ.setdefault("HTTPS_ONLY", "0")
os.environ.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")
os.environ.setdefault("EGRESS_ALLOWED_HOSTS", "127.0.0.1")
# Suites and fuzzers write a lot as one user; throttling has its own tests.
os.environ.setdefault("API_WRITE_RATE", "100000/min")

from config.settings import *  # noqa: E402,F403

# Hashing passwords with PBKDF2 makes factories slow; tests do not need the strength.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The manifest storage needs collectstatic; tests render admin pages without it.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve static files from the app folders (no collectstatic in tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
