"""Executing a run on a worker (DESIGN.md, "Executing an action").

``workflows.runs`` queues runs and claims them; ``execute`` does the work:

1. The run uses the rights of ``Run.triggered_by`` (the person who ran it, or who set up
   its webhook) *now*: still a member, and Use on every referenced key; a deleted or
   forbidden key fails its step with a clear error that names the reference, never a value.
2. Only the keys this run needs are decrypted, in one query.
3. Steps run in order; each output feeds later steps; a failed step ends the run. Before
   each step the run must still be running (not cancelled): then its keys are recorded as
   used (one ``used`` audit event each, before a value leaves) and the step runs.
4. Everything kept — outputs, errors, logs, the inputs and the configs as run — goes
   through one ``Redactor`` built from the values the run decrypted. It leaves
   ``[redacted:<key id>]``: a reader sees the key's name only if they may Use it
   (``workflows.reading``). Each step is stored as it ends (the run page shows progress).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.http import Http404
from django.utils import timezone

from secretsapp import audit
from secretsapp.fields import SecretDecryptionError
from secretsapp.models import SecretKey
from workflows import access, cancellation, egress, http, runs, sandbox
from workflows.configs import UNSTORABLE_CHARACTERS, stored_references
from workflows.egress import EgressRefused
from workflows.models import Action, ActionType, Run, RunStatus, RunStep, StepStatus, Workflow
from workflows.redaction import Redactor, redacting_logs
from workflows.references import Context, Encoding, InvalidReference, Kind, resolve, resolve_value

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

MAX_INPUTS_SIZE = 65_536
# A response body or a code result nested deeper than this fails its step: redaction,
# storing and rendering the output all recurse, and would run out of stack (a 500).
MAX_OUTPUT_DEPTH = 100


class StepFailed(Exception):
    """A step could not run; the message is safe to show (it is redacted anyway)."""


@dataclass
class _Secrets:
    """The keys of one run: values the caller may use, and why the others are missing."""

    values: dict[uuid.UUID, tuple[str, str]] = field(default_factory=dict)  # id → (name, value)
    problems: dict[uuid.UUID, str] = field(default_factory=dict)


def clean_inputs(workflow: Workflow, inputs: Any) -> dict[str, Any]:
    if inputs is None:
        return {}
    if not isinstance(inputs, dict):
        raise ValidationError({"inputs": ["Give the inputs as an object of name → value."]})
    unknown = sorted(set(inputs) - set(workflow.inputs))
    if unknown:
        raise ValidationError(
            {
                "inputs": [
                    f"Unknown input(s): {', '.join(unknown)}. This workflow takes: "
                    f"{', '.join(workflow.inputs) or 'no inputs'}."
                ]
            }
        )
    if len(repr(inputs)) > MAX_INPUTS_SIZE:
        raise ValidationError(
            {"inputs": [f"Inputs are limited to {MAX_INPUTS_SIZE:,} characters."]}
        )
    if _holds_unstorable_text(inputs):
        # The run keeps its inputs: PostgreSQL's jsonb cannot hold NUL (a 500 there).
        raise ValidationError(
            {"inputs": ["Inputs cannot contain NUL characters or unpaired surrogates."]}
        )
    return inputs


def _nested_deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:  # without recursion, or a deep value would crash the check itself
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _holds_unstorable_text(value: Any) -> bool:
    stack = [value]
    while stack:  # without recursion: inputs may nest
        item = stack.pop()
        if isinstance(item, str):
            if UNSTORABLE_CHARACTERS.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _storable(value: Any) -> Any:
    """``value`` with NUL and unpaired surrogates replaced by U+FFFD. Outputs and errors
    come from code and servers: PostgreSQL cannot store NUL, neither the redactor nor any
    database takes a surrogate, and a run that fails to be recorded would leave a key used
    with no run and no audit event. (Outputs are at most MAX_OUTPUT_DEPTH deep.)"""
    if isinstance(value, str):
        return UNSTORABLE_CHARACTERS.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value


def _load_secrets(
    actor: AbstractBaseUser, organization_id: int, secret_ids: set[uuid.UUID]
) -> _Secrets:
    """Decrypt the keys the caller may Use; explain the others (deleted or forbidden)."""
    secrets = _Secrets()
    if not secret_ids:
        return secrets
    try:
        # One query for any number of keys; rows, not model instances (cheaper per key).
        rows = SecretKey.objects.for_user(actor).filter(pk__in=secret_ids)
        for secret_id, name, value in rows.values_list("pk", "name", "value"):
            secrets.values[secret_id] = (name, value)
    except SecretDecryptionError as error:
        for secret_id in secret_ids:
            secrets.problems[secret_id] = str(error)
        secrets.values.clear()
        return secrets
    missing = secret_ids - set(secrets.values)
    if missing:
        forbidden = SecretKey.objects.filter(organization_id=organization_id, pk__in=missing)
        for secret_key in forbidden:
            audit.record_denial(actor, secret_key, "use")
            secrets.problems[secret_key.pk] = (
                f"{{{{secret:{secret_key.pk}}}}} is a secret key you may not use."
            )
        for secret_id in missing - set(secrets.problems):
            secrets.problems[secret_id] = f"{{{{secret:{secret_id}}}}} was deleted."
    return secrets


CANCELLED_STEP = "Cancelled while this step ran: it was stopped."
INTERNAL_ERROR = "The run failed on an internal error; it is logged for the administrators."


def execute(run_id: Any, *, supervised: bool = True) -> None:
    """Claim the queued run ``run_id`` and execute it; nothing if another worker has it,
    it was cancelled, or its organization has no room (it waits).

    ``supervised``: a heartbeat thread marks the run alive and stops it when cancelled
    (on a worker; not in Celery's eager mode, where it runs inside the caller)."""
    run = runs.claim(run_id)
    if run is None:
        return
    control = cancellation.Control()
    try:
        with ExitStack() as stack:
            if supervised:
                stack.enter_context(runs.Heartbeat(run, control))
            stack.enter_context(cancellation.controlling(control))
            _execute(run, control)
    except Exception:
        logger.exception("Run %s failed on an internal error.", run.pk)
        runs.finish(run, RunStatus.FAILED, INTERNAL_ERROR)
        raise
    finally:
        runs.dispatch_next(run.organization_id)


def _why_it_cannot_start(run: Run) -> str | None:
    actor = run.triggered_by
    if actor is None or not actor.is_active:
        return "The person whose rights this run uses was removed or deactivated."
    try:
        access.require_membership(actor, run.organization_id)
    except Http404:
        return (
            f"{actor.get_username()} is no longer a member of this organization: the run "
            "cannot use their rights."
        )
    if run.workflow is None:
        return "The workflow was deleted before the run started."
    if run.single_action and run.action is None:
        return "The action was deleted before the run started."
    return None


def _execute(run: Run, control: cancellation.Control) -> None:
    problem = _why_it_cannot_start(run)
    if problem:
        # Its inputs are not kept: nothing was decrypted to redact them with.
        runs.finish(run, RunStatus.FAILED, problem, queued_inputs={})
        return
    actor, workflow = run.triggered_by, run.workflow
    actions = [run.action] if run.single_action else list(workflow.actions.order_by("position"))
    parsed = [(action, stored_references(action.type, action.config)) for action in actions]
    secret_ids = {
        reference.secret_id
        for _, references in parsed
        for _, reference in references
        if reference.kind is Kind.SECRET
    }
    secrets = _load_secrets(actor, run.organization_id, secret_ids)
    # Placeholders name keys by id; readers see a name only if they may Use the key.
    redactor = Redactor.for_run(
        (str(secret_id), value) for secret_id, (_, value) in secrets.values.items()
    )
    inputs = run.queued_inputs
    # Kept redacted from now on (with the first step's check, or the end).
    shown_inputs = {"inputs": redactor.redact(inputs), "queued_inputs": {}}
    used: set[uuid.UUID] = set()  # the keys the steps that ran resolved
    context = Context(
        secrets={secret_id: value for secret_id, (_, value) in secrets.values.items()},
        inputs=inputs,
        steps=[],
    )

    failed = False
    for number, (action, references) in enumerate(parsed, start=1):
        newly_used = {
            reference.secret_id
            for _, reference in references
            if reference.kind is Kind.SECRET and reference.secret_id in context.secrets
        } - used
        used |= newly_used
        # No step starts once the run is cancelled; its keys count as used before any
        # value leaves (one audit event each), and readers without Use lose its outputs.
        if control.cancelled or not runs.still_running(
            run, secret_key_ids=sorted(str(secret_id) for secret_id in used), **shown_inputs
        ):
            return
        shown_inputs = {}
        audit.record_key_uses(
            actor,
            run.organization_id,
            {secret_id: secrets.values[secret_id][0] for secret_id in newly_used},
            run.pk,
            timezone.now(),
        )
        step = _run_step(action, references, context, secrets, redactor, control)
        step.run = run
        step.position = action.position if run.single_action else number
        step.save(force_insert=True)
        if step.status == StepStatus.FAILED:
            failed = True
            break
    if not control.cancelled:
        runs.finish(run, RunStatus.FAILED if failed else RunStatus.SUCCEEDED, **shown_inputs)


def _run_step(
    action: Action,
    references: list,
    context: Context,
    secrets: _Secrets,
    redactor: Redactor,
    control: cancellation.Control,
) -> RunStep:
    """Run one step; its outcome, redacted, as a RunStep to store."""
    step_started = time.monotonic()
    output: Any = None
    error = ""
    try:
        for field_name, reference in references:
            if reference.kind is Kind.SECRET and reference.secret_id in secrets.problems:
                raise StepFailed(f"{field_name}: {secrets.problems[reference.secret_id]}")
        # Libraries log while the step runs (httpx: the URL, which may hold a value).
        with redacting_logs(redactor):
            result = _perform(action, context)
        if _nested_deeper_than(result, MAX_OUTPUT_DEPTH):
            raise StepFailed(
                f"The output is nested deeper than {MAX_OUTPUT_DEPTH} levels, "
                "which runs cannot keep."
            )
        output = result
        status = StepStatus.SUCCEEDED
    except sandbox.SandboxError as failure:
        # Redacted before the message is cut to size, and the logs (cut at the output
        # limit) also where they end: a cut inside a value leaves its first characters.
        status = StepStatus.FAILED
        error = sandbox.shortened(redactor.redact_text(_storable(failure.message)))
        output = {"result": None, "logs": redactor.redact_cut_text(_storable(failure.logs))}
    except (StepFailed, InvalidReference, EgressRefused, http.HttpActionError) as failure:
        status, error = StepStatus.FAILED, str(failure)
    if control.cancelled:
        # Whatever the killed sandbox or the aborted request left is not the step's result.
        status, error = StepStatus.FAILED, CANCELLED_STEP
    context.steps.append(output)
    return RunStep(
        action=action,
        name=action.name,
        type=action.type,
        status=status,
        config=redactor.redact(action.config),
        output=redactor.redact(_storable(output)),
        error=redactor.redact_text(_storable(error)),
        duration_ms=int((time.monotonic() - step_started) * 1000),
    )


# --- Steps -------------------------------------------------------------------------------


def _perform(action: Action, context: Context) -> Any:
    config = action.config
    if action.type == ActionType.SEND_API_REQUEST:
        return _send_api_request(config, context)
    if action.type == ActionType.RUN_CODE:
        variables = {
            variable["name"]: resolve_value(
                variable["value"], context, f"config.variables[{index}].value"
            )
            for index, variable in enumerate(config["variables"])
        }
        return sandbox.run_code(config["language"], config["code"], variables)
    raise StepFailed(f"Unknown action type “{action.type}”.")


def _resolve_url(url: str, context: Context) -> str:
    """A reference that starts the URL is its base (e.g. a whole webhook URL kept as a
    key) and goes in as is; everywhere else a value is percent-encoded, so it cannot add
    a path, a query or a host."""
    if url.startswith("{{"):
        end = url.index("}}") + 2
        return resolve(url[:end], context, "config.url", Encoding.PLAIN) + resolve(
            url[end:], context, "config.url", Encoding.URL
        )
    return resolve(url, context, "config.url", Encoding.URL)


def _send_api_request(config: dict, context: Context) -> dict:
    if not config["url"].strip():
        raise StepFailed("config.url: enter the URL to send the request to.")
    url = _resolve_url(config["url"], context)
    query = [
        (
            row["name"],
            resolve(row["value"], context, f"config.query[{index}].value", Encoding.PLAIN),
        )
        for index, row in enumerate(config["query"])
    ]
    headers = [
        (
            row["name"],
            resolve(row["value"], context, f"config.headers[{index}].value", Encoding.HEADER),
        )
        for index, row in enumerate(config["headers"])
    ]
    body = config["body"]
    content: bytes | None = None
    if body["type"] == "fields":
        content = json.dumps(
            {
                row["name"]: resolve(
                    row["value"], context, f"config.body.fields[{index}].value", Encoding.PLAIN
                )
                for index, row in enumerate(body["fields"])
            }
        ).encode()
    elif body["type"] == "raw":
        content = resolve(body["raw"], context, "config.body.raw", Encoding.JSON).encode()
    if content is not None and not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    if query:
        url = _with_query(url, query)
    return http.send_request(config["method"], url, headers=headers, content=content)


def _with_query(url: str, query: list[tuple[str, str]]) -> str:
    return str(egress.parse_url(url).copy_merge_params(query))
