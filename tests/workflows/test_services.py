"""Workflow and action writes: validation, permissions, ordering, and the where-used index."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from secretsapp import services as secret_services
from tests.conftest import Personas, code_action, http_action
from workflows import services
from workflows.models import Action, SecretReference


@pytest.fixture
def workflow(personas: Personas):
    return services.create_workflow(personas.member_use, name="Charge", inputs=["customer"])


def _ref(key) -> str:
    return f"{{{{secret:{key.pk}}}}}"


def test_create_action_indexes_its_keys(personas: Personas, workflow):
    action = services.create_action(
        personas.member_use,
        workflow,
        name="Call Stripe",
        action_type="send_api_request",
        config=http_action(
            headers=[{"name": "Authorization", "value": f"Bearer {_ref(personas.restricted_key)}"}],
            query=[{"name": "k", "value": _ref(personas.restricted_key)}],
        ),
    )
    reference = SecretReference.objects.get(action=action)
    assert reference.secret_key_id == personas.restricted_key.pk
    assert reference.fields == ["config.query[0].value", "config.headers[0].value"]
    usage = services.usage_of(personas.restricted_key)
    assert [(row.action.name, row.action.workflow.name) for row in usage] == [
        ("Call Stripe", "Charge")
    ]


def test_usage_costs_one_query(personas: Personas, workflow, django_assert_num_queries):
    for index in range(5):
        services.create_action(
            personas.admin,
            workflow,
            name=f"Step {index}",
            action_type="send_api_request",
            config=http_action(query=[{"name": "k", "value": _ref(personas.team_key)}]),
        )
    with django_assert_num_queries(1):
        usage = services.usage_of(personas.team_key)
        assert [row.action.workflow.name for row in usage] == ["Charge"] * 5


def test_updating_the_config_updates_the_index(personas: Personas, workflow):
    action = services.create_action(
        personas.admin,
        workflow,
        name="A",
        action_type="run_code",
        config=code_action(token=_ref(personas.team_key)),
    )
    services.update_action(
        personas.admin, action, config=code_action(token=_ref(personas.restricted_key))
    )
    assert list(SecretReference.objects.values_list("secret_key_id", flat=True)) == [
        personas.restricted_key.pk
    ]
    services.update_action(personas.admin, action, config=code_action())
    assert not SecretReference.objects.exists()


def test_referencing_a_key_the_editor_may_not_use_is_refused(personas: Personas, workflow):
    with pytest.raises(ValidationError, match="not a secret key you may use"):
        services.create_action(
            personas.member_nothing,
            workflow,
            name="Sneaky",
            action_type="run_code",
            config=code_action(token=_ref(personas.restricted_key)),
        )
    assert not Action.objects.exists()


@pytest.fixture
def stripe_action(personas: Personas, workflow) -> Action:
    """An action of the workflow that holds the Restricted key (bob-use may Use it)."""
    return services.create_action(
        personas.member_use,
        workflow,
        name="Uses Stripe",
        action_type="run_code",
        config=code_action(token=_ref(personas.restricted_key)),
    )


def test_member_without_use_cannot_edit_any_field_of_a_workflow_holding_the_key(
    personas: Personas, stripe_action: Action
):
    action = stripe_action
    with pytest.raises(PermissionDenied) as refused:
        services.update_action(personas.member_nothing, action, name="Renamed")
    assert "uses secret keys you may not use" in str(refused.value)
    assert personas.restricted_key.name not in str(refused.value)
    action.refresh_from_db()
    assert action.name == "Uses Stripe"


def test_a_reference_to_a_deleted_key_does_not_stop_an_edit(
    personas: Personas, stripe_action: Action
):
    action = stripe_action
    secret_services.delete_secret_key(personas.admin, personas.restricted_key)
    renamed = services.update_action(personas.member_nothing, action, name="Renamed")
    assert renamed.name == "Renamed"
    assert SecretReference.objects.filter(action=action).exists()


def test_unknown_input_and_later_step_are_refused(personas: Personas, workflow):
    with pytest.raises(ValidationError) as raised:
        services.create_action(
            personas.admin,
            workflow,
            name="Bad",
            action_type="send_api_request",
            config=http_action(
                query=[
                    {"name": "a", "value": "{{inputs.nope}}"},
                    {"name": "b", "value": "{{steps.1.body}}"},
                ]
            ),
        )
    messages = " ".join(raised.value.message_dict["config"])
    assert "config.query[0].value" in messages and "no input “nope”" in messages
    assert "config.query[1].value" in messages and "no step runs before it" in messages


def test_viewers_cannot_edit(personas: Personas, workflow):
    with pytest.raises(PermissionDenied):
        services.create_workflow(personas.viewer, name="Nope")
    with pytest.raises(PermissionDenied):
        services.create_action(
            personas.viewer, workflow, name="x", action_type="run_code", config=code_action()
        )


def _actions(workflow) -> list[tuple[int, str]]:
    return list(workflow.actions.order_by("position").values_list("position", "name"))


def test_insert_move_and_delete_keep_positions_and_step_references(personas: Personas, workflow):
    admin = personas.admin
    first = services.create_action(
        admin, workflow, name="first", action_type="run_code", config=code_action()
    )
    second = services.create_action(
        admin,
        workflow,
        name="second",
        action_type="run_code",
        config=code_action(x="{{steps.1.result}}"),
    )
    services.create_action(
        admin, workflow, name="zeroth", action_type="run_code", config=code_action(), position=1
    )
    assert _actions(workflow) == [(1, "zeroth"), (2, "first"), (3, "second")]
    second.refresh_from_db()
    assert second.config["variables"][0]["value"] == "{{steps.2.result}}"  # followed "first"

    # "second" reads "first": it may not move before it.
    with pytest.raises(ValidationError, match="does not run before it"):
        services.update_action(admin, second, position=1)
    assert _actions(workflow) == [(1, "zeroth"), (2, "first"), (3, "second")]

    # "first" is read by "second": it may not be deleted.
    with pytest.raises(ValidationError, match="used by action 3"):
        services.delete_action(admin, Action.objects.get(pk=first.pk))

    services.delete_action(admin, Action.objects.get(name="zeroth"))
    assert _actions(workflow) == [(1, "first"), (2, "second")]
    second.refresh_from_db()
    assert second.config["variables"][0]["value"] == "{{steps.1.result}}"


def test_removing_an_input_still_in_use_is_refused(personas: Personas, workflow):
    services.create_action(
        personas.admin,
        workflow,
        name="x",
        action_type="run_code",
        config=code_action(c="{{inputs.customer}}"),
    )
    with pytest.raises(ValidationError, match="still used"):
        services.update_workflow(personas.admin, workflow, inputs=[])


def test_deleting_a_key_keeps_the_reference_for_a_clear_failure(personas: Personas, workflow):
    services.create_action(
        personas.admin,
        workflow,
        name="x",
        action_type="run_code",
        config=code_action(t=_ref(personas.team_key)),
    )
    secret_services.delete_secret_key(personas.admin, personas.team_key)
    assert SecretReference.objects.filter(secret_key_id=personas.team_key.pk).exists()
