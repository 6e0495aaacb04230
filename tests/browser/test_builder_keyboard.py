"""The + menu without a mouse: open, move, search, insert, and close with the keyboard."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.builder_pages import (
    chips_of,
    header_value,
    insert_menu,
    key_submenu,
    picker_keys,
    secret_reference,
    workflow_with_request,
)
from tests.browser.conftest import SignIn
from tests.conftest import Personas


def test_keyboard_inserts_secret_key_at_caret_and_returns_focus_to_field(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    member = browser_personas.member_use
    _, action = workflow_with_request(member, f"{echo_server.url}/echo")
    sign_in(page, member)
    page.goto(f"/workflows/{action.workflow_id}/")
    field = header_value(page, action)
    keyboard = page.keyboard

    field.focus()
    keyboard.type("Bearer ;v=1")
    # Caret after "Bearer ", before ";v=1".
    keyboard.press("Home")
    for _ in range(len("Bearer ")):
        keyboard.press("ArrowRight")
    keyboard.press("Tab")
    plus_button = page.get_by_role("button", name="Insert into Header 1 value")
    expect(plus_button).to_be_focused()

    keyboard.press("Enter")
    expect(insert_menu(page)).to_be_visible()
    expect(plus_button).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("menuitem", name="Insert Variable")).to_be_focused()
    keyboard.press("ArrowDown")
    expect(page.get_by_role("menuitem", name="Insert a Secret Key")).to_be_focused()
    keyboard.press("ArrowRight")
    search = key_submenu(page).get_by_role("searchbox", name="Search secret keys")
    expect(search).to_be_focused()
    keyboard.type("live")
    # Filtered on the server: only the matching key is left.
    expect(picker_keys(page)).to_have_count(1)
    expect(picker_keys(page)).to_have_attribute("data-key-name", "Stripe live")
    keyboard.press("Enter")
    expect(picker_keys(page)).to_be_focused()
    keyboard.press("Enter")

    reference = secret_reference(browser_personas.restricted_key)
    expect(insert_menu(page)).to_be_hidden()
    expect(field).to_have_value(f"Bearer {reference};v=1")
    expect(field).to_be_focused()
    caret = len("Bearer ") + len(reference)
    assert field.evaluate("field => [field.selectionStart, field.selectionEnd]") == [caret, caret]
    expect(chips_of(page, field)).to_have_text(["Stripe live"])
    expect(plus_button).to_have_attribute("aria-expanded", "false")

    # Escape closes the menu and puts focus back in the field, the text untouched.
    keyboard.press("Tab")
    expect(plus_button).to_be_focused()
    keyboard.press("Space")
    expect(page.get_by_role("menuitem", name="Insert Variable")).to_be_focused()
    keyboard.press("Escape")
    expect(insert_menu(page)).to_be_hidden()
    expect(plus_button).to_have_attribute("aria-expanded", "false")
    expect(field).to_be_focused()
    expect(field).to_have_value(f"Bearer {reference};v=1")


def test_escape_in_key_submenu_closes_it_before_the_menu(
    page: Page, browser_personas: Personas, sign_in: SignIn, echo_server
) -> None:
    member = browser_personas.member_use
    _, action = workflow_with_request(member, f"{echo_server.url}/echo")
    sign_in(page, member)
    page.goto(f"/workflows/{action.workflow_id}/")
    field = header_value(page, action)
    keyboard = page.keyboard
    field.focus()
    keyboard.press("Tab")
    keyboard.press("Enter")
    keyboard.press("ArrowDown")
    keys_item = page.get_by_role("menuitem", name="Insert a Secret Key")
    expect(keys_item).to_be_focused()
    keyboard.press("ArrowRight")
    expect(key_submenu(page).get_by_role("searchbox", name="Search secret keys")).to_be_focused()

    keyboard.press("Escape")

    # The submenu is closed, the menu still open on its item.
    # Short waits: while the bug lasts, this fails without holding up the suite.
    expect(keys_item).to_be_focused(timeout=1_000)
    expect(key_submenu(page)).to_be_hidden(timeout=1_000)
    expect(keys_item).to_have_attribute("aria-expanded", "false", timeout=1_000)
    keyboard.press("Escape")
    expect(insert_menu(page)).to_be_hidden()
    expect(field).to_be_focused()
