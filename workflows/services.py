"""Every write of workflows and actions, and the where-used index of secret keys.

Every change of a workflow (its settings, adding, editing, moving or removing a step,
deleting it) needs Use on every key the workflow references (``access.require_change``,
asked with the workflow row locked): a run uses the runner's rights, so whoever shapes the
steps around a key must be trusted with it. Saving an action validates its config
(``workflows.configs``), checks its references (inputs declared on the workflow, steps
that come earlier, keys the editor may Use) and rewrites its rows of the where-used index
in the same transaction. Execution is in
``workflows.execution``.
"""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from secretsapp import audit
from secretsapp.access import WorkflowChangeRefused
from secretsapp.models import AuditAction, SecretKey
from secretsapp.services import UNSET, clean_name
from workflows import access
from workflows.configs import clean_config, stored_references
from workflows.models import Action, ActionType, SecretReference, Webhook, Workflow
from workflows.references import IDENTIFIER, Kind, Reference, renumber_steps

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

MAX_INPUTS = 50
MAX_ACTIONS = 50


def _clean_inputs(inputs: object) -> list[str]:
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
        raise ValidationError({"inputs": [f"Give a list of at most {MAX_INPUTS} input names."]})
    errors = []
    for index, name in enumerate(inputs):
        if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
            errors.append(
                f"inputs[{index}]: use letters, digits and _ (not first), e.g. customer_id."
            )
        elif inputs.index(name) != index:
            errors.append(f"inputs[{index}]: “{name}” is listed twice.")
    if errors:
        raise ValidationError({"inputs": errors})
    return list(inputs)


P = ParamSpec("P")
R = TypeVar("R")


def audits_refusals(service: Callable[P, R]) -> Callable[P, R]:
    """A refused change rolls back with the service's transaction; its denial is then
    recorded, so admins see who tried (``WorkflowChangeRefused.record``)."""

    @functools.wraps(service)
    def refused_or_done(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return service(*args, **kwargs)
        except WorkflowChangeRefused as refusal:
            refusal.record()
            raise

    return refused_or_done


# --- Workflows ---------------------------------------------------------------------------


def create_workflow(actor: AbstractBaseUser, *, name: str, inputs: Any = ()) -> Workflow:
    membership = access.require_edit(actor)
    errors: dict[str, Any] = {}
    try:
        name = clean_name(name)
    except ValidationError as error:
        errors.update(error.message_dict)
    try:
        inputs = _clean_inputs(list(inputs) if isinstance(inputs, tuple) else inputs)
    except ValidationError as error:
        errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    return Workflow.objects.create(
        organization_id=membership.organization_id, name=name, inputs=inputs, created_by=actor
    )


@audits_refusals
def update_workflow(
    actor: AbstractBaseUser, workflow: Workflow, *, name: Any = UNSET, inputs: Any = UNSET
) -> Workflow:
    access.require_edit(actor, workflow.organization_id)
    errors: dict[str, Any] = {}
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        access.require_change(actor, workflow)
        if name is not UNSET:
            try:
                workflow.name = clean_name(name)
            except ValidationError as error:
                errors.update(error.message_dict)
        if inputs is not UNSET:
            try:
                workflow.inputs = _clean_inputs(inputs)
            except ValidationError as error:
                errors.update(error.message_dict)
            else:
                _require_inputs_still_declared(workflow, errors)
        if errors:
            raise ValidationError(errors)
        workflow.updated_at = timezone.now()
        workflow.save()
    return workflow


def _require_inputs_still_declared(workflow: Workflow, errors: dict[str, Any]) -> None:
    """An input may not be removed while an action still reads it."""
    declared = set(workflow.inputs)
    for action in workflow.actions.all():
        for field, reference in stored_references(action.type, action.config):
            if reference.kind is Kind.INPUT and reference.name not in declared:
                errors.setdefault("inputs", []).append(
                    f"“{reference.name}” is still used by action {action.position} ({field})."
                )


@audits_refusals
def delete_workflow(actor: AbstractBaseUser, workflow: Workflow) -> None:
    access.require_edit(actor, workflow.organization_id)
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        access.require_change(actor, workflow)
        if Webhook.objects.filter(workflow=workflow).exists():
            # Its token stops working with it: as audited as removing the webhook.
            audit.record_webhook_event(
                actor,
                AuditAction.WEBHOOK_REMOVED,
                workflow.organization_id,
                workflow.pk,
                workflow.name,
            )
        workflow.delete()


# --- Actions -----------------------------------------------------------------------------


def _check_references(
    actor: AbstractBaseUser,
    workflow: Workflow,
    position: int,
    references: list[tuple[str, Reference]],
    already_referenced: set[uuid.UUID],
) -> list[str]:
    """Errors for references that cannot work: unknown inputs, later steps, keys the
    editor may not Use. Keys the action already referenced are not re-checked here: the
    editor may Use every existing one (``access.require_change``), and a reference to a
    deleted key may stay while another field is fixed (it fails at run time)."""
    errors = []
    declared = set(workflow.inputs)
    new_secret_ids = set()
    for field, reference in references:
        if reference.kind is Kind.INPUT and reference.name not in declared:
            errors.append(
                f"{field}: {reference.text} — the workflow has no input “{reference.name}”."
            )
        elif reference.kind is Kind.STEP and reference.step >= position:
            earlier = "no step runs before it" if position == 1 else f"use steps 1–{position - 1}"
            errors.append(f"{field}: {reference.text} — only earlier steps' outputs; {earlier}.")
        elif reference.kind is Kind.SECRET and reference.secret_id not in already_referenced:
            new_secret_ids.add(reference.secret_id)
    if new_secret_ids:
        usable = set(
            SecretKey.objects.for_user(actor)
            .filter(pk__in=new_secret_ids)
            .values_list("pk", flat=True)
        )
        for field, reference in references:
            if reference.kind is Kind.SECRET and reference.secret_id in new_secret_ids - usable:
                errors.append(f"{field}: {reference.text} is not a secret key you may use.")
    return errors


def _save_index(action: Action, references: list[tuple[str, Reference]]) -> None:
    fields_by_key: dict[uuid.UUID, list[str]] = defaultdict(list)
    for field, reference in references:
        if reference.kind is Kind.SECRET and field not in fields_by_key[reference.secret_id]:
            fields_by_key[reference.secret_id].append(field)
    action.secret_references.all().delete()
    SecretReference.objects.bulk_create(
        SecretReference(
            organization_id=action.workflow.organization_id,
            action=action,
            secret_key_id=secret_id,
            fields=fields,
        )
        for secret_id, fields in fields_by_key.items()
    )


def _clean_action(
    actor: AbstractBaseUser,
    workflow: Workflow,
    *,
    name: Any,
    action_type: Any,
    config: Any,
    position: int,
    already_referenced: set[uuid.UUID],
) -> tuple[str, dict, list[tuple[str, Reference]]]:
    errors: dict[str, Any] = {}
    try:
        name = clean_name(name)
    except ValidationError as error:
        errors.update(error.message_dict)
    references: list[tuple[str, Reference]] = []
    normalized: dict = {}
    if action_type not in ActionType.values:
        errors["type"] = [f"Choose one of: {', '.join(ActionType.values)}."]
    else:
        try:
            normalized, references = clean_config(action_type, config)
        except ValidationError as error:
            errors.update(error.message_dict)
        else:
            problems = _check_references(actor, workflow, position, references, already_referenced)
            if problems:
                errors["config"] = problems
    if errors:
        raise ValidationError(errors)
    return name, normalized, references


@audits_refusals
def create_action(
    actor: AbstractBaseUser,
    workflow: Workflow,
    *,
    name: str,
    action_type: str,
    config: Any,
    position: int | None = None,
) -> Action:
    """Add an action at ``position`` (default: last); later actions move down one."""
    access.require_edit(actor, workflow.organization_id)
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
        access.require_change(actor, workflow)
        count = workflow.actions.count()
        if count >= MAX_ACTIONS:
            raise ValidationError({"workflow": [f"A workflow has at most {MAX_ACTIONS} actions."]})
        position = _clean_position(position, count + 1)
        name, normalized, references = _clean_action(
            actor,
            workflow,
            name=name,
            action_type=action_type,
            config=config,
            position=position,
            already_referenced=set(),
        )
        # Later actions move down one, and references to their outputs follow them.
        _renumber(workflow, {old: old + 1 for old in range(position, count + 1)})
        action = Action.objects.create(
            workflow=workflow, name=name, type=action_type, position=position, config=normalized
        )
        _save_index(action, references)
        _touch(workflow)
    return action


@audits_refusals
def update_action(
    actor: AbstractBaseUser,
    action: Action,
    *,
    name: Any = UNSET,
    config: Any = UNSET,
    position: Any = UNSET,
) -> Action:
    """Change name, config (type stays) and/or position; the index follows the config."""
    access.require_edit(actor, action.workflow.organization_id)
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=action.workflow_id)
        access.require_change(actor, workflow)
        action = Action.objects.select_related("workflow").get(pk=action.pk)
        count = workflow.actions.count()
        new_position = action.position if position is UNSET else _clean_position(position, count)
        already = set(action.secret_references.values_list("secret_key_id", flat=True))
        name, normalized, references = _clean_action(
            actor,
            workflow,
            name=action.name if name is UNSET else name,
            action_type=action.type,
            config=action.config if config is UNSET else config,
            # Step numbers in the config count in the current order; a move renumbers them.
            position=action.position,
            already_referenced=already,
        )
        old_position = action.position
        action.name, action.config = name, normalized
        action.updated_at = timezone.now()
        action.save()
        _save_index(action, references)
        if new_position != old_position:
            _move(workflow, old_position, new_position)
            action.refresh_from_db()
        _touch(workflow)
    return action


@audits_refusals
def delete_action(actor: AbstractBaseUser, action: Action) -> None:
    """Delete the action; later steps move up and references to them follow."""
    access.require_edit(actor, action.workflow.organization_id)
    with transaction.atomic():
        workflow = Workflow.objects.select_for_update().get(pk=action.workflow_id)
        access.require_change(actor, workflow)
        position = action.position
        users = [
            f"action {other.position} ({field})"
            for other in workflow.actions.exclude(pk=action.pk)
            for field, reference in stored_references(other.type, other.config)
            if reference.kind is Kind.STEP and reference.step == position
        ]
        if users:
            raise ValidationError(
                {"position": [f"Step {position}'s output is used by {', '.join(users)}."]}
            )
        action.delete()
        count = workflow.actions.count()
        _renumber(workflow, {old: old - 1 for old in range(position + 1, count + 2)})
        _touch(workflow)


def _clean_position(position: Any, last: int) -> int:
    if position is None:
        return last
    if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= last:
        raise ValidationError({"position": [f"Choose a position from 1 to {last}."]})
    return position


def _move(workflow: Workflow, old_position: int, new_position: int) -> None:
    """Move one action; the ones between shift by one, and every step reference follows
    its step. A step that would then read a later step's output is refused."""
    order = list(range(1, workflow.actions.count() + 1))
    order.insert(new_position - 1, order.pop(old_position - 1))
    _renumber(workflow, {old: new for new, old in enumerate(order, start=1) if old != new})


def _renumber(workflow: Workflow, mapping: dict[int, int]) -> None:
    """Give actions their new positions and rewrite {{steps.<n>…}} to match."""
    if not mapping:
        return
    errors = []
    for action in workflow.actions.all():
        before = (action.position, action.config)
        action.position = mapping.get(action.position, action.position)
        action.config = _renumbered(action.config, mapping)
        for field, reference in stored_references(action.type, action.config):
            if reference.kind is Kind.STEP and reference.step >= action.position:
                errors.append(
                    f"After the move, action {action.position} ({field}) would read step "
                    f"{reference.step}, which does not run before it."
                )
        # Positions are not unique in the database, so rows can be saved one by one.
        if (action.position, action.config) != before:
            action.save(update_fields=["position", "config"])
    if errors:
        raise ValidationError({"position": errors})


def _renumbered(value: Any, mapping: dict[int, int], key: str = "") -> Any:
    if isinstance(value, str):
        if key == "code":  # code is not templated
            return value
        return renumber_steps(value, mapping)
    if isinstance(value, dict):
        return {name: _renumbered(item, mapping, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_renumbered(item, mapping) for item in value]
    return value


def _touch(workflow: Workflow) -> None:
    Workflow.objects.filter(pk=workflow.pk).update(updated_at=timezone.now())


# --- Where-used --------------------------------------------------------------------------


def usage_of(secret_key: SecretKey) -> list[SecretReference]:
    """The actions (with their workflows) that reference the key: one query."""
    return list(
        SecretReference.objects.filter(
            organization_id=secret_key.organization_id, secret_key_id=secret_key.pk
        )
        .select_related("action__workflow")
        .order_by("action__workflow__name", "action__workflow_id", "action__position")
    )
