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
# The machine's Redis; only the queue tests (tests/queue) send to it, with real workers.
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

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

# Outside tests/queue, a run executes in the test's own process as soon as it is queued
# (Celery's eager mode): those tests are about what a run does, not how it is queued.
# tests/queue switches this off and runs real `celery worker` processes.
# The worker processes of tests/queue use these settings too, with it off.
CELERY_TASK_ALWAYS_EAGER = os.environ.get("CELERY_TASK_ALWAYS_EAGER", "1") == "1"
CELERY_TASK_EAGER_PROPAGATES = True
# tests/queue: a file, so that worker processes share the test database (SQLite only).
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3" and os.environ.get(  # noqa: F405
    "TEST_SQLITE_FILE"
):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_SQLITE_FILE"]}  # noqa: F405
