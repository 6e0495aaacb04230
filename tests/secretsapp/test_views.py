"""Secret key pages and partials: permissions, validation, and never a value in any page."""

from __future__ import annotations

import pytest
from django.views.debug import ExceptionReporter

from secretsapp import audit
from secretsapp.models import AuditEvent, SecretKey
from tests.conftest import RESTRICTED_VALUE, TEAM_VALUE, Personas, api_client_for
from tests.factories import SecretKeyFactory
from workflows import services as workflow_services


def _client(client, user):
    client.force_login(user)
    return client


def test_pages_need_sign_in(client, personas: Personas):
    for url in ("/keys/", "/keys/picker/", "/keys/manage/", "/audit/", "/workflows/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_picker_lists_only_usable_keys(client, personas: Personas):
    html = _client(client, personas.member_nothing).get("/keys/picker/").content.decode()
    assert "Slack webhook" in html
    assert "Stripe live" not in html
    html = _client(client, personas.member_use).get("/keys/picker/?q=stri").content.decode()
    assert "Stripe live" in html and "Slack webhook" not in html


def test_picker_shows_the_first_50_in_constant_queries(
    client, personas: Personas, django_assert_max_num_queries
):
    SecretKeyFactory.create_batch(60, organization=personas.organization)
    _client(client, personas.member_use)
    # session, user, membership, keys
    with django_assert_max_num_queries(4):
        response = client.get("/keys/picker/")
    assert response.content.decode().count('role="menuitem"') == 50
    assert "first 50" in response.content.decode()


def test_names_answer_only_usable_keys(client, personas: Personas):
    url = f"/keys/names/?id={personas.restricted_key.pk}&id={personas.team_key.pk}&id=junk"
    names = _client(client, personas.member_nothing).get(url).json()
    assert names == {str(personas.team_key.pk): "Slack webhook"}


def test_create_from_the_modal(client, personas: Personas):
    response = _client(client, personas.member_use).post(
        "/keys/new/",
        {
            "name": "Twilio",
            "value": "twilio-value-123",
            "access": "restricted",
            "grant-principal": [f"group:{personas.group.pk}"],
            "grant-level": ["use"],
        },
    )
    assert response.status_code == 201
    assert "secretKeyCreated" in response["HX-Trigger"]
    secret_key = SecretKey.objects.with_grants().get(name="Twilio")
    assert [grant.principal_name for grant in secret_key.grants] == ["Platform"]
    assert "twilio-value-123" not in response.content.decode()


def test_create_errors_are_422_and_the_value_is_never_sent_back(client, personas: Personas):
    response = _client(client, personas.member_use).post(
        "/keys/new/", {"name": "stripe LIVE", "value": "typed-value-xyz", "access": "team"}
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "already exists" in html
    assert "typed-value-xyz" not in html
    assert 'value="stripe LIVE"' in html
    assert SecretKey.objects.count() == 2


def test_viewer_cannot_create_from_the_modal(client, personas: Personas):
    response = _client(client, personas.viewer).post("/keys/new/", {"name": "x", "value": "y" * 10})
    assert response.status_code == 403
    assert SecretKey.objects.count() == 2


@pytest.mark.parametrize(
    ("persona", "status"),
    [
        ("admin", 200),
        ("member_manage", 200),
        ("member_use", 403),
        ("member_nothing", 404),
        ("outsider", 404),
    ],
)
def test_rename_needs_manage(client, personas: Personas, persona, status):
    url = f"/keys/{personas.restricted_key.pk}/rename/"
    response = _client(client, personas.by_name(persona)).post(
        url, {"name": "New", "confirm": "yes"}
    )
    assert response.status_code == status
    expected = "New" if status == 200 else "Stripe live"
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).name == expected


def test_rename_and_delete_first_show_the_usage(client, personas: Personas):
    workflow = workflow_services.create_workflow(personas.admin, name="Billing")
    workflow_services.create_action(
        personas.admin,
        workflow,
        name="Charge",
        action_type="run_code",
        config={
            "language": "python",
            "code": "return 1",
            "variables": [{"name": "k", "value": f"{{{{secret:{personas.restricted_key.pk}}}}}"}],
        },
    )
    client = _client(client, personas.admin)
    preview = client.post(f"/keys/{personas.restricted_key.pk}/rename/", {"name": "Stripe prod"})
    assert "Confirm rename" in preview.content.decode()
    assert "Billing › Step 1 “Charge”" in preview.content.decode()
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).name == "Stripe live"
    preview = client.post(f"/keys/{personas.restricted_key.pk}/delete/")
    assert "Delete permanently" in preview.content.decode()
    assert SecretKey.objects.filter(pk=personas.restricted_key.pk).exists()
    done = client.post(f"/keys/{personas.restricted_key.pk}/delete/", {"confirm": "yes"})
    assert done.status_code == 200
    assert "secretKeysChanged" in done["HX-Trigger"]
    assert not SecretKey.objects.filter(pk=personas.restricted_key.pk).exists()


def test_update_value_and_access_from_the_panel(client, personas: Personas):
    client = _client(client, personas.member_manage)
    response = client.post(
        f"/keys/{personas.restricted_key.pk}/value/", {"value": "brand-new-value-1"}
    )
    assert response.status_code == 200
    assert "brand-new-value-1" not in response.content.decode()
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).version == 2
    response = client.post(
        f"/keys/{personas.restricted_key.pk}/access/",
        {
            "access": "team",
            "grant-principal": [f"user:{personas.member_manage.pk}"],
            "grant-level": ["manage"],
        },
    )
    assert response.status_code == 200
    assert SecretKey.objects.get(pk=personas.restricted_key.pk).access == "team"
    bad = client.post(f"/keys/{personas.restricted_key.pk}/value/", {"value": ""})
    assert bad.status_code == 422


def test_a_manager_who_removes_their_own_access_is_taken_back_to_the_list(
    client, personas: Personas
):
    client = _client(client, personas.member_manage)
    # Restricted, granted to nobody: carol (a Manage grant, not the creator) loses it.
    response = client.post(f"/keys/{personas.restricted_key.pk}/access/", {"access": "restricted"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "You no longer have access to “Stripe live”" in html
    assert "secretKeysChanged" in response["HX-Trigger"]
    assert client.get(f"/keys/{personas.restricted_key.pk}/").status_code == 404


def test_use_only_detail_has_no_controls(client, personas: Personas):
    html = (
        _client(client, personas.member_use)
        .get(f"/keys/{personas.restricted_key.pk}/")
        .content.decode()
    )
    assert "may use this key in actions but not change it" in html
    assert "Rename" not in html and "Delete key" not in html


def test_audit_page_is_for_admins_and_filters_by_key(client, personas: Personas):
    assert _client(client, personas.member_manage).get("/audit/").status_code == 403
    client = _client(client, personas.admin)
    html = client.get(f"/audit/?secret={personas.team_key.pk}").content.decode()
    assert html.count("<tr>") == 2  # header + one "created" event
    assert client.get("/audit/?secret=nope").status_code == 404


def test_no_page_ever_contains_a_value(client, personas: Personas):
    client = _client(client, personas.admin)
    urls = [
        "/keys/",
        "/keys/picker/",
        "/keys/manage/",
        "/keys/new/",
        "/audit/",
        f"/keys/{personas.restricted_key.pk}/",
        f"/keys/{personas.team_key.pk}/",
        f"/keys/names/?id={personas.team_key.pk}",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        for value in (RESTRICTED_VALUE, TEAM_VALUE):
            assert value not in response.content.decode(), url
    assert AuditEvent.objects.exclude(action="created").count() == 0


def test_pages_send_a_strict_content_security_policy(client, personas: Personas):
    response = _client(client, personas.admin).get("/keys/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    assert "<script>" not in response.content.decode()


@pytest.mark.parametrize("path", ["page create", "page update", "api create", "api update"])
def test_an_error_report_of_a_value_write_does_not_show_the_value(
    client, rf, personas: Personas, monkeypatch, path: str
):
    # What error e-mails (and error trackers using Django's filter) show: every frame's
    # local variables. A failure inside the service, once the value is on its way.
    def fail(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(audit, "record_event", fail)
    value = "error-report-canary-4711"
    key_url = f"/api/v1/secrets/{personas.restricted_key.pk}/"
    page = _client(client, personas.member_manage)
    api = api_client_for(personas.member_manage)
    write = {
        "page create": lambda: page.post("/keys/new/", {"name": "New", "value": value}),
        "page update": lambda: page.post(
            f"/keys/{personas.restricted_key.pk}/value/", {"value": value}
        ),
        "api create": lambda: api.post(
            "/api/v1/secrets/", {"name": "New", "value": value}, format="json"
        ),
        "api update": lambda: api.patch(key_url, {"value": value}, format="json"),
    }[path]
    with pytest.raises(RuntimeError) as raised:
        write()
    reporter = ExceptionReporter(rf.post("/"), raised.type, raised.value, raised.tb)
    frames = reporter.get_traceback_frames()
    # From the request handler to the service (the test and its client are not served).
    first = next(i for i, frame in enumerate(frames) if "/core/handlers/" in frame["filename"])
    frames = [frame for frame in frames[first:] if "/tests/" not in frame["filename"]]
    assert frames[-1]["function"] in ("create_secret_key", "update_secret_key")
    leaking = [
        (frame["function"], name)
        for frame in frames
        for name, shown in frame["vars"]
        if value in repr(shown)
    ]
    assert leaking == []


def test_a_grant_principal_that_is_not_an_id_is_a_422(client, personas: Personas):
    response = _client(client, personas.member_manage).post(
        f"/keys/{personas.restricted_key.pk}/access/",
        {"access": "restricted", "grant-principal": ["user:²"], "grant-level": ["use"]},
    )
    assert response.status_code == 422


def test_the_manage_panel_pages_its_table_in_place(client, personas: Personas):
    # The panel opens over another page (the builder): its page links load the next rows
    # into the panel's table instead of navigating that page.
    SecretKeyFactory.create_batch(55, organization=personas.organization)
    client = _client(client, personas.admin)
    html = client.get("/keys/manage/").content.decode()
    assert 'hx-get="/keys/manage/?list=1&page=2" hx-target="#key-table"' in html
    assert "Next →" in html
    second = client.get("/keys/manage/?list=1&page=2").content.decode()
    assert "Page 2 of 2" in second and "← Previous" in second
