"""The workflow page's webhook panel in Chromium: Create swaps in the URL with its token
(htmx, no inline script), Copy puts it on the clipboard, and a reload shows it no more."""

from __future__ import annotations

import hashlib
import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.builder_pages import secret_reference, workflow_with_request
from tests.browser.conftest import Screenshot, SignIn
from tests.conftest import Personas
from workflows.models import Run, Webhook


def test_create_shows_the_url_once_copy_copies_it_and_rotate_replaces_it(
    page: Page,
    browser_personas: Personas,
    sign_in: SignIn,
    screenshot: Screenshot,
    echo_server,
    live_url: str,
) -> None:
    owner = browser_personas.member_use
    workflow, _ = workflow_with_request(
        owner,
        f"{echo_server.url}/echo",
        authorization=f"Bearer {secret_reference(browser_personas.restricted_key)}",
    )
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.on("dialog", lambda dialog: dialog.accept())  # Rotate asks to confirm
    sign_in(page, owner)

    page.goto(f"/workflows/{workflow.pk}/")
    panel = page.locator("#webhook-panel")
    expect(panel).to_contain_text("No webhook.")
    panel.get_by_role("button", name="Create webhook").click()

    field = panel.get_by_role("textbox", name="Webhook URL")
    expect(field).to_have_value(re.compile(r"/hooks/[A-Za-z0-9_-]{43}/$"))
    url = field.input_value()
    token = url.rsplit("/", 2)[-2]
    assert hashlib.sha256(token.encode()).hexdigest() == Webhook.objects.get().token_hash
    expect(panel.get_by_role("status")).to_contain_text("it is shown only this once")
    screenshot(page, "screen-webhook-created")

    panel.get_by_role("button", name="Copy").click()
    expect(panel.locator("[data-copy-status]")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == url

    # The copied URL works for another system: no session, no CSRF token.
    response = httpx.post(url, json={}, headers={"Connection": "close"}, timeout=30)
    assert response.status_code == 202, response.text
    assert Run.objects.get().triggered_by == owner

    page.reload()
    expect(panel).to_contain_text(f"/hooks/{token[:8]}…")
    expect(panel).to_contain_text("Set up by bob-use")
    expect(panel.get_by_role("textbox", name="Webhook URL")).to_have_count(0)
    assert token not in page.content()

    panel.get_by_role("button", name="Rotate").click()
    expect(field).to_have_value(re.compile(r"/hooks/[A-Za-z0-9_-]{43}/$"))
    assert field.input_value() != url
    gone = httpx.post(url, json={}, headers={"Connection": "close"}, timeout=30)
    assert gone.status_code == 404
    assert live_url in field.input_value()
