"""Headless Chromium (Debian's package) driven by Playwright, the way a person clicks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright

from tests.support.browser_processes import within
from tests.support.databases import require_or_skip

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
# Closing takes well under a second; past this the browser is stuck and is killed.
SHUTDOWN_STEP_S = 20.0
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Chromium reaches for Google's services at start; this machine's network refuses them.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    # The deployment tests use real-looking names (jira.example.test); they are all here.
    "--host-resolver-rules=MAP *.example.test 127.0.0.1",
]


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where a test saves its screenshots: the README's, in `docs/screenshots`, with
    TWOFA_UPDATE_SCREENSHOTS=1 (`make screenshots`); a scratch folder otherwise, so that
    `make test` leaves the checkout as it found it."""
    if os.environ.get("TWOFA_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return tmp_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 (one stat before the browser starts)
        require_or_skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    manager = async_playwright()
    playwright = await manager.__aenter__()
    try:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await within(launched.close(), "closing Chromium", SHUTDOWN_STEP_S)
    finally:
        await within(manager.__aexit__(None, None, None), "stopping Playwright", SHUTDOWN_STEP_S)


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context()
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        await within(context.close(), "closing the browser context", SHUTDOWN_STEP_S)
