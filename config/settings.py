"""Settings, read from environment variables (documented in .env.example and the README)."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_str,
    generated_secret,
    new_django_secret_key,
    new_fernet_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent
# Git-ignored folder for development-only state: generated keys and the SQLite file.
VAR_DIR = Path(env_str("VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)


def _required_secret(name: str, generate) -> str:
    value = env_str(name)
    if value:
        return value
    if DEBUG:
        return generated_secret(VAR_DIR / name.lower(), generate)
    raise ImproperlyConfigured(
        f"{name} is not set. With DEBUG off it must be provided (environment variable "
        f"{name} or a file named by {name}_FILE); see .env.example."
    )


SECRET_KEY = _required_secret("SECRET_KEY", new_django_secret_key)

# One Fernet key or a comma-separated list: the first encrypts, all of them decrypt
# (rotation: put the new key first, run `manage.py rotate_encryption_key`, drop the old).
FIELD_ENCRYPTION_KEY = [
    key.strip()
    for key in _required_secret("FIELD_ENCRYPTION_KEY", new_fernet_key).split(",")
    if key.strip()
]
for _key in FIELD_ENCRYPTION_KEY:
    try:
        Fernet(_key)
    except ValueError as _error:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be one or more comma-separated Fernet keys "
            "(32 url-safe base64-encoded bytes each; generate one with "
            "`python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)."
        ) from _error

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# --- Executing actions -------------------------------------------------------------------
# Host names, IP addresses and CIDR networks that Send API Request may reach even though
# they are private/loopback (e.g. 127.0.0.1 for local development and tests).
EGRESS_ALLOWED_HOSTS = env_list("EGRESS_ALLOWED_HOSTS")
# Send API Request: seconds to connect and to wait for each read, the largest response
# body read (bytes), and how many redirects are followed (each one re-checked).
HTTP_ACTION_CONNECT_TIMEOUT = env_float("HTTP_ACTION_CONNECT_TIMEOUT", 5.0)
HTTP_ACTION_READ_TIMEOUT = env_float("HTTP_ACTION_READ_TIMEOUT", 30.0)
HTTP_ACTION_MAX_RESPONSE_BYTES = env_int("HTTP_ACTION_MAX_RESPONSE_BYTES", 5 * 1024 * 1024)
HTTP_ACTION_MAX_REDIRECTS = env_int("HTTP_ACTION_MAX_REDIRECTS", 5)
# Idle connections kept open per destination (address, port and TLS name) for the next
# request, and for how long; 0 connections turns keep-alive off.
HTTP_ACTION_KEEPALIVE_CONNECTIONS = env_int("HTTP_ACTION_KEEPALIVE_CONNECTIONS", 8)
HTTP_ACTION_KEEPALIVE_SECONDS = env_float("HTTP_ACTION_KEEPALIVE_SECONDS", 5.0)
# Run Code sandbox (bubblewrap): CPU seconds, wall-clock seconds, memory (MiB), processes
# and output (bytes) per run; network off unless SANDBOX_NETWORK is on.
SANDBOX_CPU_SECONDS = env_int("SANDBOX_CPU_SECONDS", 5)
SANDBOX_WALL_SECONDS = env_float("SANDBOX_WALL_SECONDS", 10.0)
SANDBOX_MEMORY_MB = env_int("SANDBOX_MEMORY_MB", 256)
SANDBOX_MAX_PROCESSES = env_int("SANDBOX_MAX_PROCESSES", 32)
SANDBOX_MAX_OUTPUT_BYTES = env_int("SANDBOX_MAX_OUTPUT_BYTES", 1024 * 1024)
SANDBOX_NETWORK = env_bool("SANDBOX_NETWORK", False)
SANDBOX_BWRAP = env_str("SANDBOX_BWRAP", "/usr/bin/bwrap")
SANDBOX_NODE = env_str("SANDBOX_NODE", "/usr/bin/node")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "django_htmx",
    "secretsapp",
    "workflows",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "secretsapp.context_processors.membership",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # SQLite keeps one connection per thread; WAL lets readers run beside one writer.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # JIT compilation pays off for long analytical queries, never for these short ones: with
    # it, counting the keys a member may Use in an organization of 10,000 keys took 8 ms
    # instead of 2 (the planner prices the permission subqueries as if run per key).
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["options"] = f"{options.get('options', '')} -c jit=off".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    # user.has_perm(perm, secret_key) answers what secretsapp.access answers (Team access,
    # admins, creators, viewers capped at Use, grants). Guardian's backend would read the
    # grant rows alone; guardian still stores them (assign_perm/remove_perm need no backend).
    "secretsapp.backends.AccessBackend",
    # The same for workflows: changing one needs Use on every key it references.
    "workflows.backends.WorkflowAccessBackend",
]
# guardian.W001 asks for guardian's backend, which the one above replaces on purpose.
SILENCED_SYSTEM_CHECKS = ["guardian.W001"]
# Guardian's anonymous user is not needed: every action here requires a signed-in member.
ANONYMOUS_USER_NAME = None

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Development serves static files straight from the app folders, without collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "workflows:list"
LOGOUT_REDIRECT_URL = "login"

# The largest request body read, pages and API alike (DRF reads JSON through request.body,
# which checks it). Bigger bodies are refused from their Content-Length before a byte is
# read: 413 JSON from the API, 400 from a page. Django's default, 2.5 MB, would refuse an
# action that is within every field limit (100 query rows and 100 header rows of 8 KiB
# and a 1 MiB raw body come to ~2.7 MB, more once quotes are escaped).
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

# Shared by every app server (throttle counters must be). Without REDIS_URL, the database
# holds it: no other service, but each throttled write costs six SQL statements; with
# REDIS_URL (recommended in production), two Redis round trips and no SQL.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "secretkeys"),
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "django_cache",
        }
    }

# --- Runs on Celery workers --------------------------------------------------------------
# Runs execute on `celery -A config worker` processes, never in a web request. The database
# is the truth about each run: a worker claims a queued run with one conditional UPDATE, so
# no run is executed twice, and a queue message only says "look at run X". Without
# CELERY_BROKER_URL: REDIS_URL when set; with DEBUG (`make run`), a folder under var/ (no
# service); otherwise the app refuses to start.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL
if not CELERY_BROKER_URL and DEBUG:
    CELERY_BROKER_URL = "filesystem://localhost/"
    _queue_folder = VAR_DIR / "queue"
    _queue_folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_folder),
        "data_folder_out": str(_queue_folder),
        "control_folder": str(_queue_folder / "control"),
        "polling_interval": 0.1,
    }
if not CELERY_BROKER_URL:
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL is not set. With DEBUG off, runs need a broker shared by the app "
        "servers and the workers: redis://… or amqp://… (see .env.example)."
    )
# The queue the web sends runs to and `celery worker -Q` reads (one per deployment).
RUNS_QUEUE = env_str("RUNS_QUEUE", "runs")
CELERY_TASK_DEFAULT_QUEUE = RUNS_QUEUE
# No result backend: a run's state lives in its row (GET /api/v1/runs/{id}/ polls it).
CELERY_TASK_IGNORE_RESULT = True
# A worker takes one message at a time per process (a run may take minutes), and a message
# is acknowledged on receipt: a worker killed before it claims the run loses only the
# message, and the sweeper sends it again (RUNS_REDISPATCH_SECONDS).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Keep a worker's database connection from one run to the next (Celery's Django fix-up
# closes it around every task otherwise: a new PostgreSQL session per run cost 17–23 ms
# of database CPU, measured by `make bench`). It still honours CONN_MAX_AGE and health
# checks, and a broken connection is replaced.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
# Seconds the web waits for the broker before answering 503 (a run is never left
# unsent and unreported: it stays queued and the sweeper sends it).
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0)
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1}

# At most this many runs of one organization run at once; the others wait queued, so one
# organization cannot take every worker.
RUNS_PER_ORGANIZATION = env_int("RUNS_PER_ORGANIZATION", 8)
# A worker marks its running run alive this often; a running run not marked for
# RUNS_HEARTBEAT_TIMEOUT seconds lost its worker (killed, machine gone) and is marked
# failed, "interrupted" — never run again. The sweeper in every worker looks every
# RUNS_SWEEP_SECONDS (and reading a run checks it too).
RUNS_HEARTBEAT_SECONDS = env_float("RUNS_HEARTBEAT_SECONDS", 2.0)
RUNS_HEARTBEAT_TIMEOUT = env_float("RUNS_HEARTBEAT_TIMEOUT", 20.0)
RUNS_SWEEP_SECONDS = env_float("RUNS_SWEEP_SECONDS", 5.0)
# A queued run whose message was sent this long ago without a worker claiming it (the
# broker restarted, a worker died holding the message) is sent again.
RUNS_REDISPATCH_SECONDS = env_float("RUNS_REDISPATCH_SECONDS", 30.0)
# `"wait": N` holds a web thread up to N seconds (at most RUNS_MAX_WAIT). At most
# RUNS_MAX_WAITERS requests per web process wait at once; the others get their 202 at
# once. Keep it below gunicorn's threads per process, and slow runs can never take all
# of a web server's threads.
RUNS_MAX_WAIT = 60
RUNS_MAX_WAITERS = env_int("RUNS_MAX_WAITERS", 4)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "secretsapp.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "secretsapp.api.conventions.Pagination",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's JSON parser, with nesting depth and unpaired surrogates refused as 400s.
    "DEFAULT_PARSER_CLASSES": ["secretsapp.api.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "secretsapp.api.conventions.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["secretsapp.api.throttles.WriteRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "writes": env_str("API_WRITE_RATE", "120/min"),
        "failed_logins_per_address": env_str("API_FAILED_LOGIN_RATE_PER_ADDRESS", "30/hour"),
        "failed_logins_per_username": env_str("API_FAILED_LOGIN_RATE_PER_USERNAME", "10/hour"),
        "webhooks": env_str("WEBHOOK_RATE", "60/min"),  # calls of each webhook, any caller
    },
    # Throttles key on the client address: REMOTE_ADDR by default; behind N trusted
    # proxies, the Nth address from the right of X-Forwarded-For (never the client's own).
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Secret Keys API",
    "DESCRIPTION": (
        "Secret keys for workflow actions. Values are write-only: no response ever "
        "contains one. Authenticate with `Authorization: Token <token>` from "
        "`POST /api/v1/auth/token/`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Runs and their steps both have a "status", with different choices.
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "workflows.models.RunStatus",
        "StepStatusEnum": "workflows.models.StepStatus",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "secretsapp.api.schema.add_error_responses",
    ],
}

# --- Security headers and cookies -------------------------------------------------------
# HTTPS_ONLY turns on SSL redirect, secure cookies and HSTS together. On by default in
# production; turn it off for plain-HTTP local runs, or behind a proxy that redirects itself
# (then also set SECURE_PROXY_SSL_HEADER through TRUST_X_FORWARDED_PROTO).
HTTPS_ONLY = env_bool("HTTPS_ONLY", not DEBUG)
# A declared TLS-terminating proxy means every client connection is HTTPS even when the
# proxy, not the app, redirects plain HTTP (HTTPS_ONLY off). Only the redirect is left to
# the proxy: without the Secure flag a browser that types http:// would send the session
# cookie in clear text before the proxy's redirect, and HSTS is what stops that request.
TRUST_X_FORWARDED_PROTO = env_bool("TRUST_X_FORWARDED_PROTO", False)
CLIENTS_USE_HTTPS = HTTPS_ONLY or TRUST_X_FORWARDED_PROTO
SECURE_SSL_REDIRECT = HTTPS_ONLY
SESSION_COOKIE_SECURE = CLIENTS_USE_HTTPS
CSRF_COOKIE_SECURE = CLIENTS_USE_HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000) if CLIENTS_USE_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = CLIENTS_USE_HTTPS
SECURE_HSTS_PRELOAD = CLIENTS_USE_HTTPS
if TRUST_X_FORWARDED_PROTO:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if TRUST_X_FORWARDED_PROTO and not HTTPS_ONLY:
    # security.W008 asks for SECURE_SSL_REDIRECT; here the proxy in front redirects plain
    # HTTP itself (that is what HTTPS_ONLY=0 with a proxy declares), so the check is
    # silenced only in this combination. Plain-HTTP runs without a proxy keep the warning.
    SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "security.W008"]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Scripts only from our own origin (no inline script anywhere, htmx without eval); inline
# style attributes stay allowed for Django admin's templates.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # runserver prints its own start-up lines; do not repeat them through the log.
    "loggers": {
        # Replaces Django's default "django" logger, which would print every line twice.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.utils.autoreload": {"level": "WARNING"},
        # httpx logs every request URL at INFO, and a URL may hold a secret value (an API
        # key in the query string) on its way out. Warnings and errors still get through.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
