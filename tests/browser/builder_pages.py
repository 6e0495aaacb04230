"""What the builder tests share: workflows made through the services, and the locators of
the builder page (steps, value fields, the + menu, the Create and Manage dialogs)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from playwright.sync_api import Locator, Page, expect

from secretsapp.models import SecretKey
from workflows import services
from workflows.models import Action, ActionType, Workflow


def secret_reference(secret_key: SecretKey) -> str:
    return f"{{{{secret:{secret_key.pk}}}}}"


def workflow_with_request(
    actor: AbstractBaseUser,
    url: str,
    *,
    name: str = "Charge a customer",
    authorization: str = "",
) -> tuple[Workflow, Action]:
    """A workflow of one Send API Request step (GET `url`) with an Authorization header."""
    workflow = services.create_workflow(actor, name=name)
    action = services.create_action(
        actor,
        workflow,
        name="Call the API",
        action_type=ActionType.SEND_API_REQUEST,
        config={
            "method": "GET",
            "url": url,
            "headers": [{"name": "Authorization", "value": authorization}],
            "body": {"type": "none"},
        },
    )
    return workflow, action


def step(page: Page, action: Action) -> Locator:
    return page.locator(f"#action-{action.pk}")


def header_value(page: Page, action: Action, index: int | str = 0) -> Locator:
    return page.locator(f"#a{action.pk}-header-value-{index}")


def chips_of(page: Page, field: Locator) -> Locator:
    field_id = field.get_attribute("id")
    return page.locator(f'.chips[data-chips-for="{field_id}"] .chip')


def insert_menu(page: Page) -> Locator:
    return page.locator("#insert-menu")


def key_submenu(page: Page) -> Locator:
    return page.get_by_role("menu", name="Secret keys")


def picker_keys(page: Page) -> Locator:
    """The keys listed under Insert a Secret Key (not the Create item)."""
    return key_submenu(page).locator("[data-picker] [role=menuitem][data-key-id]")


def open_key_submenu(page: Page, plus_button: Locator) -> Locator:
    """Open the + menu with the mouse and hover Insert a Secret Key; wait for the keys."""
    plus_button.click()
    expect(insert_menu(page)).to_be_visible()
    page.get_by_role("menuitem", name="Insert a Secret Key").hover()
    submenu = key_submenu(page)
    expect(submenu).to_be_visible()
    # The list comes from /keys/picker/: a key or the "no key" note once it has loaded.
    expect(submenu.locator("[data-picker] li").first).to_be_attached()
    return submenu


def panel(page: Page) -> Locator:
    return page.locator("dialog#panel")


def modal(page: Page) -> Locator:
    return page.locator("dialog#modal")


def open_key_in_panel(page: Page, key_name: str) -> Locator:
    """Manage Secret Keys from the builder's head, then the key's detail."""
    page.locator("[data-open-manage]").click()
    drawer = panel(page)
    expect(drawer.get_by_role("heading", name="Manage Secret Keys")).to_be_visible()
    drawer.locator("[data-open-key]", has_text=key_name).click()
    expect(drawer.locator("#panel-title")).to_have_text(key_name)
    return drawer


def mark_page(page: Page) -> None:
    """Tag the window so `expect_same_page` can tell that no reload happened since."""
    page.evaluate("window.__noReloadMark = true")


def expect_same_page(page: Page) -> None:
    assert page.evaluate("window.__noReloadMark === true"), "the page was reloaded"
