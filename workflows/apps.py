from __future__ import annotations

from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from workflows.redaction import install_log_redaction

        # Libraries log during runs (httpx: every request URL); see workflows.redaction.
        install_log_redaction()
