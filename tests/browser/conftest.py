"""Playwright fixtures: Debian Chromium against pytest-django's live server.

Every test in this folder is marked `browser` and runs in its own pytest invocation with
DJANGO_ALLOW_ASYNC_UNSAFE=true (see `make pytest`). Fixtures:

- `live_url` / `base_url`: the live server's URL; `page.goto("/admin/")` is relative to it.
- `browser_personas`: the personas of tests/conftest.py, visible to the live server.
- `sign_in(page, user)`: a signed-in session without going through the login form.
- `screenshot(page, name)`: a full-page PNG in artifacts/screenshots/<name>.png.
- `requested_urls`: every URL the browser context requested; a test fails if one of them
  is not on the live server's host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from playwright.sync_api import BrowserContext, Page
from pytest_django.live_server_helper import LiveServer

from tests.conftest import Personas

BROWSER_TESTS_FOLDER = Path(__file__).resolve().parent
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
# Short enough that a broken test fails in seconds, long enough for a cold first page.
DEFAULT_TIMEOUT_MILLISECONDS = 10_000

SignIn = Callable[[Page, AbstractBaseUser], None]
Screenshot = Callable[[Page, str], Path]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest hook sees the items of the whole session, not just this folder. tryfirst
    # so the marks exist before `-m` deselects.
    for item in items:
        if BROWSER_TESTS_FOLDER in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.browser)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Checked once the selection is known, so `pytest -m "not browser"` never needs the
    # variable and a browser run without it stops before starting Chromium.
    if session.config.option.collectonly:
        return
    selected_browser_tests = [item for item in session.items if item.get_closest_marker("browser")]
    async_unsafe = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE", "").lower() == "true"
    if selected_browser_tests and not async_unsafe:
        pytest.exit(
            "Browser tests need DJANGO_ALLOW_ASYNC_UNSAFE=true (Playwright's sync API keeps an "
            "event loop in the main thread, so Django's ORM refuses to run there). Run them "
            "on their own: DJANGO_ALLOW_ASYNC_UNSAFE=true .venv/bin/pytest -m browser "
            'tests/browser, and the rest with -m "not browser" (or just `make pytest`).',
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    if async_unsafe and len(selected_browser_tests) < len(session.items):
        # The variable switches off Django's async-safety check; other tests must keep it.
        pytest.exit(
            "DJANGO_ALLOW_ASYNC_UNSAFE=true is only for the browser tests: run the others "
            'without it (-m "not browser"), and the browser tests with -m browser tests/browser.',
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Debian's Chromium (Playwright cannot download its own here), kept off the network:
    the flags stop Chromium's own background traffic, and the resolver rules make any
    name other than localhost fail at once instead of waiting on DNS."""
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        ],
    }


@pytest.fixture
def live_url(live_server: LiveServer) -> str:
    """The live server's URL, e.g. http://localhost:41234 (no trailing slash). Requesting
    it gives the test the transactional database, so data it creates is visible to the
    server thread."""
    return live_server.url


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    # Session scope because pytest-playwright's browser_context_args is session-scoped.
    # Every test with a `page` therefore depends on live_server, which gives it the
    # transactional database.
    return live_server.url


@pytest.fixture
def requested_urls() -> list[str]:
    """Every URL requested by any page of the test's browser context, in order."""
    return []


@pytest.fixture
def context(
    new_context: Callable[..., BrowserContext], requested_urls: list[str]
) -> Generator[BrowserContext]:
    context = new_context()
    context.set_default_timeout(DEFAULT_TIMEOUT_MILLISECONDS)
    context.set_default_navigation_timeout(DEFAULT_TIMEOUT_MILLISECONDS)
    context.on("request", lambda request: requested_urls.append(request.url))
    yield context
    # The pages must work offline: a CDN font or script would leak who uses the app and
    # break without a network. Checked for every test so no page can add one unnoticed.
    non_local = [url for url in requested_urls if not is_local(url)]
    if non_local:
        pytest.fail(f"The browser requested non-local URLs: {non_local}")


def is_local(url: str) -> bool:
    """True for the live server's hosts and for URLs that never touch the network."""
    parts = urlsplit(url)
    if parts.scheme in {"data", "blob", "about"}:
        return True
    return parts.hostname in LOCAL_HOSTS


@pytest.fixture
def browser_personas(live_server: LiveServer, personas: Personas) -> Personas:
    """The personas of tests/conftest.py, committed where the live server can see them.

    `personas` alone also works in any test with a `page` (that depends on live_server,
    and pytest-django picks the transactional database for the whole test then); this
    fixture says so explicitly and works without a page too."""
    return personas


@pytest.fixture
def sign_in(live_server: LiveServer) -> SignIn:
    """Sign a user in by giving the browser a session cookie, without the login form."""

    def sign_in(page: Page, user: AbstractBaseUser) -> None:
        client = Client()
        client.force_login(user)
        page.context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    # Scoped by URL rather than domain so it follows whichever host
                    # (localhost or 127.0.0.1) the live server runs on.
                    "url": live_server.url,
                    "httpOnly": True,
                    "sameSite": "Lax",
                }
            ]
        )

    return sign_in


@pytest.fixture
def screenshot(pytestconfig: pytest.Config) -> Screenshot:
    """Save a full-page PNG as artifacts/screenshots/<name>.png and return its path."""
    folder = pytestconfig.rootpath / "artifacts" / "screenshots"

    def screenshot(page: Page, name: str) -> Path:
        if not name or Path(name).name != name:
            raise ValueError(f"A screenshot name is a plain file name, not {name!r}")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        # Animations off so the same page gives the same picture.
        page.screenshot(path=path, full_page=True, animations="disabled")
        return path

    return screenshot
