"""Runs remember the keys they used; stored placeholders name keys by id, not by name.

Runs recorded before kept ``[redacted:<key name>]``, which showed Restricted key names to
every member who could read the run. Each run's keys are found in its ``used`` audit
events (id and name at the time); its placeholders are rewritten to ``[redacted:<id>]`` (shown
with the key's name to readers who may Use it). A placeholder whose name matches no key of
the run or of the organization is left as ``[redacted]``.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from typing import Any

from django.db import migrations, models

_PLACEHOLDER = re.compile(r"\[redacted:([^\]\n]*)\]")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _rewrite_text(text: str, names: dict[str, str]) -> str:
    if "[redacted:" not in text:
        return text
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(f"[redacted:{name}]", f"[redacted:{names[name]}]")
    return _PLACEHOLDER.sub(
        lambda match: match.group(0) if _is_uuid(match.group(1)) else "[redacted]", text
    )


def _rewrite(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _rewrite_text(value, names)
    if isinstance(value, dict):
        return {_rewrite_text(key, names): _rewrite(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, names) for item in value]
    return value


def forwards(apps, schema_editor) -> None:
    Run = apps.get_model("workflows", "Run")
    RunStep = apps.get_model("workflows", "RunStep")
    AuditEvent = apps.get_model("secretsapp", "AuditEvent")
    SecretKey = apps.get_model("secretsapp", "SecretKey")

    used_by_run: dict[str, dict[str, str]] = defaultdict(dict)  # run id → {name: key id}
    events = AuditEvent.objects.filter(action="used").values_list(
        "secret_key_id", "secret_key_name", "changes"
    )
    for secret_key_id, name, changes in events.iterator():
        run_id = (changes or {}).get("run_id")
        if run_id and secret_key_id:
            used_by_run[str(run_id)][name] = str(secret_key_id)
    current_names: dict[int, dict[str, str]] = defaultdict(dict)  # organization → {name: id}
    keys = SecretKey.objects.values_list("organization_id", "id", "name")
    for organization_id, secret_key_id, name in keys.iterator():
        current_names[organization_id][name] = str(secret_key_id)

    for run in Run.objects.all().iterator():
        used = used_by_run.get(str(run.pk), {})
        names = {**current_names.get(run.organization_id, {}), **used}
        run.secret_key_ids = sorted(set(used.values()))
        run.inputs = _rewrite(run.inputs, names)
        run.save(update_fields=["secret_key_ids", "inputs"])
        for step in RunStep.objects.filter(run_id=run.pk):
            step.output = _rewrite(step.output, names)
            step.error = _rewrite_text(step.error, names)
            step.config = _rewrite(step.config, names)
            step.save(update_fields=["output", "error", "config"])


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0001_initial"),
        ("secretsapp", "0003_last_used_from_audit"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="secret_key_ids",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
