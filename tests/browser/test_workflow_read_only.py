"""A member who may not Use a key of a workflow meets it read-only, and meets the runs of
it with their outputs hidden — in Chromium, at desktop and phone widths."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.builder_pages import secret_reference, step, workflow_with_request
from tests.browser.conftest import Screenshot, SignIn
from tests.conftest import RESTRICTED_VALUE, Personas
from workflows import runs

WIDTHS = {"desktop": (1440, 900), "phone": (390, 844)}


@pytest.mark.parametrize("width", list(WIDTHS))
def test_a_member_without_use_sees_the_builder_read_only_and_the_run_hidden(
    page: Page,
    browser_personas: Personas,
    sign_in: SignIn,
    screenshot: Screenshot,
    echo_server,
    width: str,
) -> None:
    page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    owner = browser_personas.member_use
    workflow, action = workflow_with_request(
        owner,
        f"{echo_server.url}/echo",
        authorization=f"Bearer {secret_reference(browser_personas.restricted_key)}",
    )
    run = runs.enqueue(owner, workflow, {})
    sign_in(page, browser_personas.member_nothing)

    page.goto(f"/workflows/{workflow.pk}/")
    notice = page.get_by_role("status").filter(has_text="uses secret keys you may not use")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Ask its creator bob-use")
    card = step(page, action)
    expect(card.get_by_role("textbox", name="Step name")).to_be_disabled()
    expect(card.locator("input[name=url]")).to_be_disabled()
    expect(card.get_by_role("button", name="Save step 1")).to_have_count(0)
    expect(page.get_by_role("heading", name="Add a step")).to_have_count(0)
    expect(page.get_by_role("button", name="Run now")).to_be_enabled()  # running is theirs
    expect(page.locator("body")).not_to_contain_text("Stripe live")
    screenshot(page, f"screen-builder-read-only-{width}")

    page.goto(f"/workflows/runs/{run.pk}/")
    expect(page.get_by_role("status")).to_contain_text("this run used secret keys you may not use")
    expect(page.locator("pre.output")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text("Stripe live")
    expect(page.locator("body")).not_to_contain_text(RESTRICTED_VALUE)
    screenshot(page, f"screen-run-hidden-{width}")
