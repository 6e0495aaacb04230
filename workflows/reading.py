"""What a reader sees of runs.

A run is stored redacted, each value replaced by ``[redacted:<key id>]``. Readers differ:

- Every member of the organization sees that a run happened: who ran it, when, its status
  and its steps' names, statuses and durations.
- Its inputs, outputs and errors only readers who may Use every key the run used
  (``secretsapp.access.KeysInView.may_read_run_outputs``): what a key fetched or produced
  is as much the key's as its value (a balance, a customer list, a step that reversed
  the value).
- A placeholder shows the key's name only to readers who may Use the key,
  ``[redacted]`` to others: a Restricted key's name is not theirs to see. Names come from
  the keys the run used (``Run.secret_key_ids``), never from the stored text, so a
  placeholder that code printed for a key the run did not hold reads ``[redacted]``.

``show_runs`` sets what one reader may see on the runs (``outputs_hidden``, ``shown_inputs``)
and their steps (``shown_output``, ``shown_error``); the API and the pages render those.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from secretsapp import access as secret_access
from workflows.models import Run

if TYPE_CHECKING:
    from secretsapp.access import AnyUser

PLACEHOLDER = re.compile(
    r"\[redacted:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\]"
)
HIDDEN = (
    "Hidden: this run used secret keys you may not use, so its inputs, outputs and "
    "errors are not shown to you."
)


def show_runs(
    reader: AnyUser, runs: Sequence[Run], key_names: Mapping[uuid.UUID, str] | None = None
) -> None:
    """Set on ``runs`` (and their prefetched steps) what ``reader`` may see of them.

    One query for any number of runs of one organization; none with ``key_names``, the
    keys the reader could Use a moment ago to make the run (its answer to the runner)."""
    if not runs:
        return
    if key_names is None:
        secret_ids = {uuid.UUID(secret_id) for run in runs for secret_id in run.secret_key_ids}
        organization_ids = {run.organization_id for run in runs}
        (organization_id,) = organization_ids  # lists are scoped to one organization
        in_view = secret_access.keys_in_view(reader, organization_id, secret_ids)
    else:
        in_view = secret_access.KeysInView(key_names, frozenset())
    names = {str(secret_id): name for secret_id, name in in_view.names.items()}
    for run in runs:
        run.outputs_hidden = not in_view.may_read_run_outputs(run.secret_key_ids)
        # Only the keys this run used are named in it.
        labels = {
            secret_id: names[secret_id] for secret_id in run.secret_key_ids if secret_id in names
        }
        run.shown_inputs = {} if run.outputs_hidden else _render(run.inputs, labels)
        for step in run.steps.all():
            if run.outputs_hidden:
                step.shown_output, step.shown_error = None, ""
            else:
                step.shown_output = _render(step.output, labels)
                step.shown_error = _render_text(step.error, labels)


def _render_text(text: str, labels: Mapping[str, str]) -> str:
    if "[redacted:" not in text:
        return text
    return PLACEHOLDER.sub(
        lambda match: (
            f"[redacted:{labels[match.group(1)]}]" if match.group(1) in labels else "[redacted]"
        ),
        text,
    )


def _render(value: Any, labels: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _render_text(value, labels)
    if isinstance(value, dict):
        return {_render_text(key, labels): _render(item, labels) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, labels) for item in value]
    return value
