"""Pages: workflows list, the builder, running a workflow, runs."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from secretsapp import access as secret_access
from secretsapp.access import require_signed_in_member
from secretsapp.models import SecretKey
from workflows import access, reading, runs, services, webhooks
from workflows.forms import ROW_KINDS, config_from_post, errors_by_field, rows_for_display
from workflows.http import METHODS
from workflows.models import Action, ActionType, Run, Workflow
from workflows.references import secret_ids_in


@login_required
def workflow_list(request: HttpRequest) -> HttpResponse:
    return _workflow_list(request, require_signed_in_member(request.user))


def _workflow_list(
    request: HttpRequest, membership, new_workflow: dict | None = None, status: int = 200
) -> HttpResponse:
    workflows = (
        Workflow.objects.filter(organization_id=membership.organization_id)
        .annotate(action_count=Count("actions"))
        .order_by("name", "id")
    )
    context = {
        "workflows": workflows,
        "new_workflow": new_workflow or _settings_form(),
        "nav": "workflows",
    }
    return render(request, "workflows/workflow_list.html", context, status=status)


@login_required
@require_POST
def workflow_create(request: HttpRequest) -> HttpResponse:
    membership = require_signed_in_member(request.user)
    try:
        workflow = services.create_workflow(
            request.user, name=request.POST.get("name", ""), inputs=_posted_inputs(request)
        )
    except ValidationError as error:
        return _workflow_list(request, membership, _settings_form(request, error), status=422)
    messages.success(request, f"Workflow “{workflow.name}” created. Add its first action.")
    return redirect("workflows:edit", workflow.pk)


def _first_message(error: ValidationError) -> str:
    return " ".join(message for messages in error.message_dict.values() for message in messages)


def _posted_inputs(request: HttpRequest) -> list[str]:
    return [name.strip() for name in request.POST.get("inputs", "").split(",") if name.strip()]


def _settings_form(
    request: HttpRequest | None = None,
    error: ValidationError | None = None,
    workflow: Workflow | None = None,
) -> dict[str, Any]:
    """A workflow's name and inputs as the form shows them: as saved, or as typed with the
    errors that refused them."""
    if request is not None:
        values = {"name": request.POST.get("name", ""), "inputs": request.POST.get("inputs", "")}
    elif workflow is not None:
        values = {"name": workflow.name, "inputs": ", ".join(workflow.inputs)}
    else:
        values = {"name": "", "inputs": ""}
    errors = error.message_dict if error is not None else {}
    return {
        **values,
        "name_errors": errors.get("name", []),
        "inputs_errors": errors.get("inputs", []),
    }


def _key_names(user, configs: list[dict]) -> dict[str, str]:
    """Names of the keys these configs reference that the user may use (for the chips)."""
    ids = set().union(*(secret_ids_in(json.dumps(config)) for config in configs))
    return SecretKey.objects.names_usable_by(user, ids) if ids else {}


def _action_context(action: Action, config: dict, errors: dict[str, list[str]]) -> dict[str, Any]:
    rows = {}
    for kind, path in ROW_KINDS.items():
        rows[kind] = [
            {
                # Strings: the templates build element ids from them.
                "index": str(index),
                "number": str(index + 1),
                "name": row.get("name", ""),
                "value": row.get("value", ""),
                "name_errors": errors.get(f"config.{path}[{index}].name", []),
                "value_errors": errors.get(f"config.{path}[{index}].value", []),
            }
            for index, row in enumerate(rows_for_display(config, path))
        ]
    return {"action": action, "config": config, "errors": errors, "rows": rows}


def _builder(
    request: HttpRequest,
    workflow: Workflow,
    invalid: dict | None = None,
    status: int = 200,
    settings_form: dict | None = None,
    new_webhook_url: str | None = None,
):
    # Editors change a workflow only while they may Use every key it references.
    refusal = access.change_refusal(request.user, workflow)
    can_edit = secret_access.may_edit(request.user) and refusal is None
    actions = list(workflow.actions.order_by("position"))
    cards = []
    for action in actions:
        if invalid and invalid["action"].pk == action.pk:
            cards.append(_action_context(action, invalid["config"], invalid["errors"]))
        else:
            cards.append(_action_context(action, action.config, {}))
    builder_data = {
        "inputs": workflow.inputs,
        "steps": [
            {"position": action.position, "name": action.name, "type": action.type}
            for action in actions
        ],
        "keyNames": _key_names(request.user, [card["config"] for card in cards]),
        "urls": {
            "picker": reverse("secretsapp:picker"),
            "names": reverse("secretsapp:names"),
            "create": reverse("secretsapp:create"),
            "manage": reverse("secretsapp:manage"),
        },
    }
    context = {
        "workflow": workflow,
        "cards": cards,
        "can_edit": can_edit,
        "change_refusal": refusal,
        "action_types": ActionType.choices,
        "methods": METHODS,
        "body_types": [("none", "None"), ("fields", "Fields"), ("raw", "Raw JSON")],
        "empty_row": {"name": "", "value": "", "name_errors": [], "value_errors": []},
        "builder_data": builder_data,
        "recent_runs": workflow.runs.order_by("-created_at")[:5],
        "settings_form": settings_form or _settings_form(workflow=workflow),
        "webhook_panel": _webhook_panel(request, workflow, can_edit, new_webhook_url),
        "nav": "workflows",
    }
    return render(request, "workflows/workflow_edit.html", context, status=status)


@login_required
def workflow_edit(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = access.get_workflow_for_user(request.user, workflow_id)
    return _builder(request, workflow)


@login_required
@require_POST
def workflow_settings(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = access.get_workflow_for_user(request.user, workflow_id, need="edit")
    try:
        services.update_workflow(
            request.user,
            workflow,
            name=request.POST.get("name", ""),
            inputs=_posted_inputs(request),
        )
    except ValidationError as error:
        form = _settings_form(request, error)
        return _builder(request, workflow, status=422, settings_form=form)
    messages.success(request, "Workflow saved.")
    return redirect("workflows:edit", workflow.pk)


@login_required
@require_POST
def workflow_delete(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = access.get_workflow_for_user(request.user, workflow_id, need="edit")
    services.delete_workflow(request.user, workflow)
    messages.success(request, f"Workflow “{workflow.name}” deleted.")
    return redirect("workflows:list")


_NEW_ACTION_CONFIGS = {
    ActionType.SEND_API_REQUEST: {"method": "GET", "url": "", "body": {"type": "none"}},
    ActionType.RUN_CODE: {"language": "python", "code": "return variables", "variables": []},
}


@login_required
@require_POST
def action_add(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = access.get_workflow_for_user(request.user, workflow_id, need="edit")
    action_type = request.POST.get("type")
    if action_type not in _NEW_ACTION_CONFIGS:
        messages.error(request, "Choose Send API Request or Run Code.")
        return redirect("workflows:edit", workflow.pk)
    config = dict(_NEW_ACTION_CONFIGS[action_type])
    try:
        action = services.create_action(
            request.user,
            workflow,
            name=ActionType(action_type).label,
            action_type=action_type,
            config=config,
        )
    except ValidationError as error:
        messages.error(request, _first_message(error))
        return redirect("workflows:edit", workflow.pk)
    return redirect(f"{workflow.get_absolute_url()}#action-{action.pk}")


@login_required
@require_POST
def action_save(request: HttpRequest, workflow_id: int, action_id: int) -> HttpResponse:
    action = access.get_action_for_user(
        request.user, action_id, need="edit", workflow_id=workflow_id
    )
    config = config_from_post(action.type, request.POST)
    try:
        services.update_action(
            request.user, action, name=request.POST.get("name", ""), config=config
        )
    except ValidationError as error:
        errors = errors_by_field(error)
        messages.error(request, f"“{action.name}” was not saved: fix the fields marked below.")
        invalid = {"action": action, "config": config, "errors": errors}
        return _builder(request, action.workflow, invalid, status=422)
    messages.success(request, f"Step {action.position} saved.")
    return redirect(f"{action.workflow.get_absolute_url()}#action-{action.pk}")


@login_required
@require_POST
def action_move(request: HttpRequest, workflow_id: int, action_id: int) -> HttpResponse:
    action = access.get_action_for_user(
        request.user, action_id, need="edit", workflow_id=workflow_id
    )
    offset = -1 if request.POST.get("direction") == "up" else 1
    try:
        services.update_action(request.user, action, position=action.position + offset)
    except ValidationError as error:
        messages.error(request, _first_message(error))
    return redirect(f"{action.workflow.get_absolute_url()}#action-{action.pk}")


@login_required
@require_POST
def action_delete(request: HttpRequest, workflow_id: int, action_id: int) -> HttpResponse:
    action = access.get_action_for_user(
        request.user, action_id, need="edit", workflow_id=workflow_id
    )
    try:
        services.delete_action(request.user, action)
    except ValidationError as error:
        messages.error(request, _first_message(error))
    else:
        messages.success(request, f"“{action.name}” removed.")
    return redirect("workflows:edit", action.workflow_id)


@login_required
@require_POST
def workflow_run(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = access.get_workflow_for_user(request.user, workflow_id)
    inputs = {name: request.POST.get(f"input-{name}", "") for name in workflow.inputs}
    try:
        run = runs.enqueue(request.user, workflow, inputs)
    except ValidationError as error:
        messages.error(request, _first_message(error))
        return redirect("workflows:edit", workflow.pk)
    return redirect("workflows:run", run.pk)


@login_required
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    run = runs.reaped_if_stale(access.get_run_for_user(request.user, run_id))
    context = {**_run_context(request, run), "nav": "workflows"}
    return render(request, "workflows/run_detail.html", context)


@never_cache
def run_live(request: HttpRequest, run_id: str) -> HttpResponse:
    """The changing part of the run page, which polls it every second while the run has
    not ended: 204 while nothing it shows has changed since ``?state=``."""
    if not request.user.is_authenticated:
        # Not @login_required: a poll would follow its redirect and swap the sign-in page
        # into the run page. Reloading lets the run page send the browser there instead.
        if request.htmx:
            return HttpResponseClientRefresh()
        return redirect_to_login(request.get_full_path())
    run = runs.reaped_if_stale(access.get_run_for_user(request.user, run_id))
    if request.GET.get("state") == _run_state(run):
        return HttpResponse(status=204)
    context = {**_run_context(request, run), "announce": bool(request.htmx)}
    return render(request, "workflows/run_live.html", context)


def _run_state(run: Run) -> str:
    """What the live part shows changes only with these: the status (and with it the times,
    the duration and the error), the steps stored, the keys used so far (which may hide
    the outputs from the reader), and whether the worker has stored the inputs yet."""
    steps = len(run.steps.all())
    return f"{run.status}.{steps}.{len(run.secret_key_ids)}.{int(bool(run.inputs))}"


def _run_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    reading.show_runs(request.user, [run])
    steps = [
        {"step": step, "output": json.dumps(step.shown_output, indent=2, ensure_ascii=False)}
        for step in run.steps.all()  # prefetched, in position order
    ]
    return {
        "run": run,
        "steps": steps,
        "state": _run_state(run),
        "may_cancel": not run.is_finished and runs.may_cancel(request.user, run),
        "hidden_notice": reading.HIDDEN,
        "announce": False,
    }


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: str) -> HttpResponse:
    run = access.get_run_for_user(request.user, run_id)
    try:
        runs.cancel(request.user, run)  # PermissionDenied: a 403 page
    except runs.CannotCancel as refusal:
        messages.error(request, str(refusal))
    else:
        if run.started_at is None:
            messages.success(request, "Run cancelled before it started.")
        else:
            messages.success(request, "Run cancelled: the step in progress is being stopped.")
    return redirect("workflows:run", run.pk)


@login_required
def run_list(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = access.get_workflow_for_user(request.user, workflow_id)
    page = Paginator(
        Run.objects.filter(workflow=workflow)
        .select_related("triggered_by")
        .order_by("-created_at"),
        25,
    ).get_page(request.GET.get("page"))
    return render(
        request, "workflows/run_list.html", {"workflow": workflow, "runs": page, "nav": "workflows"}
    )


# --- Webhooks ----------------------------------------------------------------------------


def _webhook_panel(
    request: HttpRequest, workflow: Workflow, can_edit: bool, new_url: str | None = None
) -> dict[str, Any]:
    """The webhook panel of the builder: whether there is one, whose rights its runs use,
    its last use; ``new_url`` (with the token) only in the answer to its creation."""
    webhook = webhooks.of_workflow(workflow)
    return {
        "workflow": workflow,
        "webhook": webhook,
        "url_prefix": webhooks.url_prefix(request, webhook) if webhook else "",
        "creator_gone": webhook is not None and not webhooks.may_lend_rights(webhook),
        "can_edit": can_edit,
        "new_url": new_url,
    }


@login_required
@require_POST
def webhook_save(request: HttpRequest, workflow_id: int) -> HttpResponse:
    """Set up the webhook, or give it a new token. The answer shows its URL with the
    token, this once: rendered, never stored, redirected to or put in a URL, and not
    cached (a reload shows the page without it). htmx swaps in the panel alone."""
    workflow = access.get_workflow_for_user(request.user, workflow_id, need="edit")
    webhook, token = webhooks.create_or_rotate(request.user, workflow)
    new_url = webhooks.url(request, token)
    if request.htmx:
        panel = _webhook_panel(request, workflow, True, new_url)
        response = render(request, "workflows/webhook_panel.html", {"webhook_panel": panel})
    else:
        response = _builder(request, webhook.workflow, new_webhook_url=new_url)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def webhook_remove(request: HttpRequest, workflow_id: int) -> HttpResponse:
    workflow = access.get_workflow_for_user(request.user, workflow_id, need="edit")
    if webhooks.remove(request.user, workflow):
        messages.success(request, "Webhook removed: its URL no longer starts runs.")
    else:
        messages.info(request, "This workflow has no webhook.")
    return redirect(f"{workflow.get_absolute_url()}#webhook-panel")
