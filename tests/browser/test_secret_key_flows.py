"""Secret keys in the builder, end to end in Chromium: create a key from a field's + menu,
pick keys, rename / update / delete them from Manage Secret Keys, run the workflow, the
viewer's read-only builder, and a Team key created with a Manage grant."""

from __future__ import annotations

import base64
import re
import uuid
from urllib.parse import quote

from playwright.sync_api import Page, expect

from secretsapp.models import Access, Grant, SecretKey
from tests.browser.builder_pages import (
    chips_of,
    expect_same_page,
    header_value,
    mark_page,
    modal,
    open_key_in_panel,
    open_key_submenu,
    panel,
    picker_keys,
    secret_reference,
    step,
    workflow_with_request,
)
from tests.browser.conftest import SignIn
from tests.conftest import RESTRICTED_VALUE, TEAM_VALUE, Personas
from workflows.models import Action

RUN_PAGE = re.compile(r"/workflows/runs/[0-9a-f-]{36}/$")


def test_member_creates_restricted_key_from_header_menu_and_run_sends_it_redacted(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    member = browser_personas.member_use
    browser_personas.group.group.user_set.add(member)
    canary = f"canary-{uuid.uuid4().hex}"
    key_name = "Payments API token"
    seen_html: list[str] = []
    sign_in(page, member)

    page.goto("/workflows/")
    page.locator("#new-workflow-name").fill("Charge through the payments API")
    page.get_by_role("button", name="Create workflow").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Charge through the payments API")
    page.get_by_role("button", name="+ Send API Request").click()
    form = page.locator('form[data-action-form][data-step="1"]')
    form.get_by_label("URL", exact=True).fill(f"{echo_server.url}/raw")
    form.get_by_role("button", name="+ Add Header").click()
    form.get_by_label("Header 1 name", exact=True).fill("Authorization")
    field = form.get_by_label("Header 1 value", exact=True)
    field.fill("Bearer ")
    seen_html.append(page.content())

    open_key_submenu(page, form.get_by_role("button", name="Insert into Header 1 value"))
    page.get_by_role("menuitem", name="+ Create Secret Key").click()
    dialog = modal(page)
    expect(dialog.get_by_role("heading", name="Create Secret Key")).to_be_visible()
    dialog.locator("#create-key-name").fill(key_name)
    dialog.locator("#create-key-value").fill(canary)
    dialog.locator("input[name=access][value=restricted]").check()
    dialog.get_by_role("button", name="+ Add People/Groups").click()
    dialog.locator("select[name=grant-principal]").select_option(label="Platform")
    dialog.locator("select[name=grant-level]").select_option("use")
    seen_html.append(page.content())
    dialog.locator("button[type=submit]").click()

    # The modal closes and the reference lands in the field that opened the menu.
    expect(dialog).to_be_hidden()
    secret_key = SecretKey.objects.get(name=key_name)
    assert secret_key.access == Access.RESTRICTED
    assert secret_key.grants == [Grant("group", browser_personas.group.pk, "use")]
    expect(field).to_have_value(f"Bearer {secret_reference(secret_key)}")
    expect(field).to_be_focused()
    expect(chips_of(page, field)).to_have_text([key_name])
    seen_html.append(page.content())

    form.get_by_role("button", name="Save step 1").click()
    expect(page.locator("ul.messages")).to_contain_text("Step 1 saved.")
    # After the reload the server names the chip.
    action = Action.objects.get(workflow__name="Charge through the payments API")
    assert action.config["headers"] == [
        {"name": "Authorization", "value": f"Bearer {secret_reference(secret_key)}"}
    ]
    expect(chips_of(page, header_value(page, action))).to_have_text([key_name])
    seen_html.append(page.content())

    page.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(RUN_PAGE)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Succeeded")
    output = page.locator("#step-1 pre.output")
    # /raw echoes the header raw, URL-encoded and base64-encoded: all three are redacted.
    expect(output).to_contain_text(f"Bearer [redacted:{key_name}]")
    assert output.inner_text().count(f"[redacted:{key_name}]") >= 3, output.inner_text()
    seen_html.append(page.content())

    # The target got the real value ...
    assert echo_server.requests[-1]["headers"]["Authorization"] == f"Bearer {canary}"
    # ... and no page the member saw held it, in any of the forms the target leaked.
    leaked_line = f"Bearer {canary}||"
    forbidden = [canary, quote(leaked_line, safe=""), base64.b64encode(leaked_line.encode())]
    for html in seen_html:
        for form_of_value in forbidden:
            assert str(form_of_value) not in html


def test_member_without_use_sees_only_team_keys_in_picker(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    member = browser_personas.member_nothing
    _, action = workflow_with_request(member, f"{echo_server.url}/echo")
    sign_in(page, member)

    page.goto(f"/workflows/{action.workflow_id}/")
    submenu = open_key_submenu(
        page, step(page, action).get_by_role("button", name="Insert into Header 1 value")
    )

    expect(picker_keys(page)).to_have_count(1)
    expect(picker_keys(page)).to_have_attribute("data-key-name", "Slack webhook")
    expect(submenu).not_to_contain_text("Stripe live")

    submenu.get_by_role("searchbox", name="Search secret keys").fill("stripe")
    expect(submenu.locator(".menu-note")).to_have_text("No key matches “stripe”.")
    expect(picker_keys(page)).to_have_count(0)
    # Its name is nowhere in the page either.
    assert "Stripe live" not in page.content()


def test_manager_renames_key_from_panel_and_builder_chip_follows_without_reload(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    manager = browser_personas.member_manage
    secret_key = browser_personas.restricted_key
    workflow, action = workflow_with_request(
        manager,
        f"{echo_server.url}/echo",
        name="Refund an order",
        authorization=f"Bearer {secret_reference(secret_key)}",
    )
    sign_in(page, manager)
    page.goto(f"/workflows/{workflow.pk}/")
    field = header_value(page, action)
    expect(chips_of(page, field)).to_have_text(["Stripe live"])
    mark_page(page)

    drawer = open_key_in_panel(page, "Stripe live")
    drawer.locator("#rename-name").fill("Stripe live (EU)")
    drawer.get_by_role("button", name="Rename…").click()
    confirm = drawer.get_by_role("alertdialog")
    expect(confirm).to_contain_text("Rename “Stripe live” to “Stripe live (EU)”?")
    expect(confirm.get_by_role("link")).to_have_text(["Refund an order › Step 1 “Call the API”"])
    confirm.get_by_role("button", name="Confirm rename").click()
    expect(drawer.get_by_role("status")).to_contain_text("Renamed.")
    expect(drawer.locator("#panel-title")).to_have_text("Stripe live (EU)")
    drawer.get_by_role("button", name="Close").click()

    expect(drawer).to_be_hidden()
    expect(chips_of(page, field)).to_have_text(["Stripe live (EU)"])
    expect_same_page(page)
    secret_key.refresh_from_db()
    assert secret_key.name == "Stripe live (EU)"


def test_manager_updates_value_from_panel_and_next_run_sends_new_value(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    manager = browser_personas.member_manage
    secret_key = browser_personas.restricted_key
    new_value = f"rotated-{uuid.uuid4().hex}"
    workflow, _ = workflow_with_request(
        manager, f"{echo_server.url}/echo", authorization=secret_reference(secret_key)
    )
    sign_in(page, manager)
    page.goto(f"/workflows/{workflow.pk}/")

    drawer = open_key_in_panel(page, "Stripe live")
    expect(drawer.locator("dl.facts")).to_contain_text("v1")
    drawer.locator("#update-value").fill(new_value)
    drawer.get_by_role("button", name="Update value").click()
    expect(drawer.get_by_role("status")).to_contain_text("Value updated")
    expect(drawer.locator("dl.facts")).to_contain_text("v2")
    expect(drawer.locator("#update-value")).to_have_value("")
    panel_html = page.content()
    drawer.get_by_role("button", name="Close").click()

    page.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(RUN_PAGE)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Succeeded")
    expect(page.locator("#step-1 pre.output")).to_contain_text("[redacted:Stripe live]")
    assert echo_server.requests[-1]["headers"]["Authorization"] == new_value
    for html in (panel_html, page.content()):
        assert new_value not in html
        assert RESTRICTED_VALUE not in html


def test_manager_deletes_key_after_impact_preview_and_run_fails_naming_it(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    manager = browser_personas.member_manage
    secret_key = browser_personas.restricted_key
    workflow, action = workflow_with_request(
        manager,
        f"{echo_server.url}/echo",
        name="Nightly payout",
        authorization=secret_reference(secret_key),
    )
    sign_in(page, manager)
    page.goto(f"/workflows/{workflow.pk}/")

    drawer = open_key_in_panel(page, "Stripe live")
    drawer.get_by_role("button", name="Delete key…").click()
    confirm = drawer.get_by_role("alertdialog")
    expect(confirm).to_contain_text("These actions use it and will fail")
    expect(confirm.get_by_role("link")).to_have_text(["Nightly payout › Step 1 “Call the API”"])
    confirm.get_by_role("button", name="Delete permanently").click()

    expect(drawer.get_by_role("status")).to_have_text("“Stripe live” deleted.")
    expect(drawer.locator("[data-open-key]")).to_have_text(["Slack webhook"])
    drawer.get_by_role("button", name="Close").click()
    expect(chips_of(page, header_value(page, action))).to_have_text(["key not available to you"])

    page.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(RUN_PAGE)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Failed")
    # The error names the field and the reference, as the builder would show them.
    expect(page.locator("#step-1 .error-box")).to_have_text(
        f"config.headers[0].value: {secret_reference(secret_key)} was deleted."
    )
    assert echo_server.requests == []


def test_viewer_sees_read_only_builder_but_can_run(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    workflow, action = workflow_with_request(
        browser_personas.member_use,
        f"{echo_server.url}/echo",
        authorization=secret_reference(browser_personas.team_key),
    )
    sign_in(page, browser_personas.viewer)
    page.goto(f"/workflows/{workflow.pk}/")

    card = step(page, action)
    controls = card.locator("input:not([type=hidden]), select, textarea")
    assert controls.count() >= 4  # name, method, URL, header name and value, body radios
    for index in range(controls.count()):
        expect(controls.nth(index)).to_be_disabled()
    expect(chips_of(page, header_value(page, action))).to_have_text(["Slack webhook"])
    expect(page.locator(".plus-button")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile(r"^Save step"))).to_have_count(0)
    expect(page.get_by_role("button", name="+ Add Header")).to_have_count(0)
    expect(page.get_by_role("button", name="+ Send API Request")).to_have_count(0)
    expect(card.get_by_role("button", name="Remove")).to_have_count(0)
    expect(page.get_by_text("You are a viewer")).to_be_visible()

    page.get_by_role("button", name="Run now").click()
    expect(page).to_have_url(RUN_PAGE)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Succeeded")
    expect(page.locator("#step-1 pre.output")).to_contain_text("[redacted:Slack webhook]")
    assert echo_server.requests[-1]["headers"]["Authorization"] == TEAM_VALUE
    assert TEAM_VALUE not in page.content()


def test_member_creates_team_key_with_manage_grant_and_grant_is_kept(
    page: Page, browser_personas: Personas, sign_in: SignIn
) -> None:
    manager = browser_personas.member_manage
    sign_in(page, browser_personas.member_use)
    page.goto("/keys/")
    page.get_by_role("button", name="+ Create Secret Key").click()
    dialog = modal(page)
    dialog.locator("#create-key-name").fill("Deploy hook")
    dialog.locator("#create-key-value").fill(f"hook-{uuid.uuid4().hex}")
    expect(dialog.locator("input[name=access][value=team]")).to_be_checked()
    dialog.get_by_role("button", name="+ Add People/Groups").click()
    dialog.locator("select[name=grant-principal]").select_option(label=manager.get_username())
    dialog.locator("select[name=grant-level]").select_option("manage")
    dialog.locator("button[type=submit]").click()
    expect(dialog.get_by_role("heading", name="Secret key created")).to_be_visible()
    dialog.get_by_role("button", name="Done").click()

    page.locator("[data-keys-page] [data-open-key]", has_text="Deploy hook").click()
    drawer = panel(page)
    expect(drawer.locator("#panel-title")).to_have_text("Deploy hook")
    access_form = drawer.locator("form", has=page.locator("input[name=access]"))
    expect(access_form.locator("input[name=access][value=team]")).to_be_checked()
    # Short waits: while the bug lasts, this fails without holding up the suite.
    expect(access_form.locator("select[name=grant-principal]")).to_have_value(
        f"user:{manager.pk}", timeout=1_000
    )
    expect(access_form.locator("select[name=grant-level]")).to_have_value("manage", timeout=1_000)
