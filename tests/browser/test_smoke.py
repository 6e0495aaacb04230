"""Chromium renders the admin against the live server, offline."""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Page, expect

from tests.browser.conftest import LOCAL_HOSTS, Screenshot, SignIn
from tests.conftest import Personas


def record_requests(page: Page) -> list[str]:
    """The URLs the page requests from now on."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    return requested


def test_admin_login_page_renders_without_leaving_localhost(
    page: Page, screenshot: Screenshot
) -> None:
    requested = record_requests(page)

    page.goto("/admin/login/")

    expect(page).to_have_title("Log in | Secret Keys admin")
    expect(page.get_by_label("Username")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_visible()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    screenshot(page, "admin-login")
    # The page and its stylesheets all come from the live server.
    assert any(url.endswith(".css") for url in requested), requested
    assert {urlsplit(url).hostname for url in requested} <= LOCAL_HOSTS, requested


def test_signed_in_admin_sees_secret_keys_on_admin_index(
    page: Page,
    live_url: str,
    browser_personas: Personas,
    sign_in: SignIn,
    screenshot: Screenshot,
) -> None:
    requested = record_requests(page)
    sign_in(page, browser_personas.admin)

    page.goto("/admin/")

    expect(page.get_by_role("link", name="Secret keys", exact=True)).to_be_visible()
    # Signed in as the persona, not bounced to the login form.
    expect(page).to_have_url(f"{live_url}/admin/")
    expect(page.locator("#user-tools")).to_contain_text(browser_personas.admin.get_username())
    screenshot(page, "admin-index-org-admin")
    assert {urlsplit(url).hostname for url in requested} <= LOCAL_HOSTS, requested
