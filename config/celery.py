"""The Celery app: `celery -A config worker` runs the queued runs (workflows.tasks)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("secretkeys")
# Every CELERY_* setting of config/settings.py, e.g. CELERY_BROKER_URL → broker_url.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workflows"])
