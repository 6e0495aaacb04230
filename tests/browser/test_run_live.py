"""The run page follows a queued run until it ends, without a reload, and cancels it — in
Chromium, at desktop and phone widths.

The runs are rows the test changes itself, as a worker would (Celery is eager in tests:
a run queued through the page has already ended when the page shows it)."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from tests.browser.conftest import Screenshot, SignIn
from tests.conftest import Personas
from workflows import services
from workflows.models import ActionType, Run, RunStep

WIDTHS = {"desktop": (1440, 900), "phone": (390, 844)}
POLL_URL_PART = "/live/"


def _queued_run(personas: Personas) -> Run:
    workflow = services.create_workflow(personas.member_use, name="Nightly report")
    return Run.objects.create(
        organization=personas.organization,
        workflow=workflow,
        triggered_by=personas.member_use,
        status="queued",
    )


def _polls(requested_urls: list[str]) -> int:
    return sum(POLL_URL_PART in url for url in requested_urls)


@pytest.mark.parametrize("width", list(WIDTHS))
def test_the_run_page_follows_the_run_until_it_ends_then_stops_asking(
    page: Page,
    browser_personas: Personas,
    sign_in: SignIn,
    screenshot: Screenshot,
    requested_urls: list[str],
    width: str,
) -> None:
    page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    run = _queued_run(browser_personas)
    sign_in(page, browser_personas.member_use)
    page.goto(f"/workflows/runs/{run.pk}/")
    heading = page.get_by_role("heading", level=1)
    times = page.locator(".run-times")
    expect(heading).to_have_text("Run Queued")
    expect(page.get_by_text("Waiting for a worker to start the run.")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
    # Set on this document: a reload would lose it.
    page.evaluate("window.sameDocument = true")
    screenshot(page, f"screen-run-queued-{width}")

    started = timezone.now()
    Run.objects.filter(pk=run.pk).update(status="running", started_at=started, heartbeat_at=started)
    expect(heading).to_have_text("Run Running")
    expect(times).to_contain_text("running…")

    RunStep.objects.create(
        run=run,
        position=1,
        name="Count the rows",
        type=ActionType.RUN_CODE,
        status="succeeded",
        output={"result": {"rows": 42}, "logs": ""},
        duration_ms=310,
    )
    expect(page.locator("#step-1")).to_contain_text("Count the rows")
    expect(page.locator("#step-1 pre.output")).to_contain_text('"rows": 42')
    expect(heading).to_have_text("Run Running")  # a step ended, not the run
    screenshot(page, f"screen-run-running-{width}")

    Run.objects.filter(pk=run.pk).update(
        status="succeeded", finished_at=timezone.now(), duration_ms=1250
    )
    expect(heading).to_have_text("Run Succeeded")
    expect(times).to_contain_text("1250 ms")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.locator("#run-announcement")).to_have_text("Run status: Succeeded.")
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"

    # The part that shows the ended run has no trigger: no more requests.
    expect(page.locator("#run-live")).not_to_have_attribute("hx-trigger", "every 1s")
    polls = _polls(requested_urls)
    page.wait_for_timeout(2500)
    assert _polls(requested_urls) == polls
    screenshot(page, f"screen-run-succeeded-{width}")


@pytest.mark.parametrize("width", list(WIDTHS))
def test_cancelling_a_queued_run_from_its_page(
    page: Page,
    browser_personas: Personas,
    sign_in: SignIn,
    screenshot: Screenshot,
    requested_urls: list[str],
    width: str,
) -> None:
    page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    run = _queued_run(browser_personas)
    sign_in(page, browser_personas.member_use)
    page.goto(f"/workflows/runs/{run.pk}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Run Queued")

    page.get_by_role("button", name="Cancel run").click()

    expect(page).to_have_url(re.compile(rf"/workflows/runs/{run.pk}/$"))
    expect(page.locator("ul.messages")).to_have_text("Run cancelled before it started.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Run Cancelled")
    expect(page.locator(".run-error")).to_have_text("Cancelled by bob-use.")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    run.refresh_from_db()
    assert (run.status, run.cancelled_by) == ("cancelled", browser_personas.member_use)
    polls = _polls(requested_urls)
    page.wait_for_timeout(1500)
    assert _polls(requested_urls) == polls  # an ended run is not followed
    screenshot(page, f"screen-run-cancelled-{width}")
