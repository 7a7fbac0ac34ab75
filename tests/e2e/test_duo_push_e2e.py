"""The seed's Step 3 clicked through in Chromium: first-login enrolment with the phone page in
another tab, a later validation, and a denied push."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.conftest import RunningSimulator
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, running_gateway


@pytest.fixture
async def gateway_url(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[str]:
    async with (
        sqlite_database(tmp_path) as database_url,
        running_gateway(database_url, simulator, mode="demo") as (base_url, _settings),
    ):
        yield base_url


async def sign_in(page: Page, gateway_url: str, username: str) -> None:
    await page.goto(f"{gateway_url}/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORDS[username])
    await page.get_by_role("button", name="Sign in").click()


async def answer_on_phone(
    phone: Page,
    simulator: RunningSimulator,
    action: str,
    username: str = "alice",
    application: str = "Test app",
) -> None:
    await phone.goto(f"{simulator.base_url}/_sim/phone")
    await phone.get_by_label("User").select_option(username)
    await expect(phone.get_by_text("Login request")).to_be_visible()
    await expect(phone.get_by_text(application)).to_be_visible()
    await phone.get_by_role("button", name=action).click()


async def test_first_login_enrolment_then_validation_then_denial(
    context: BrowserContext, gateway_url: str, simulator: RunningSimulator
) -> None:
    page, phone = await context.new_page(), await context.new_page()

    await sign_in(page, gateway_url, "alice")
    await expect(
        page.get_by_role("heading", name="Set up two-factor authentication")
    ).to_be_visible()
    await page.get_by_role("link", name="Next").click()
    await expect(page.get_by_role("heading", name="Set up Duo Push")).to_be_visible()
    await expect(page.get_by_role("button", name="Send Me Push Notification")).to_be_disabled()
    await page.get_by_text("Can't scan it?").click()
    activation_code = await page.locator("#activation-code").inner_text()

    await phone.goto(f"{simulator.base_url}/_sim/phone")
    await phone.get_by_label("Activation code").fill(activation_code)
    await phone.get_by_role("button", name="Activate this phone").click()
    await expect(phone.get_by_text("Activated Duo Mobile for alice")).to_be_visible()

    await expect(page.get_by_text("Your phone is activated")).to_be_visible()
    await page.get_by_role("button", name="Send Me Push Notification").click()
    await expect(page.get_by_text("Push sent")).to_be_visible()
    await answer_on_phone(phone, simulator, "Approve")
    await expect(page.locator("#demo-app-welcome")).to_contain_text("Alice Liddell")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You have been signed out.")).to_be_visible()

    await sign_in(page, gateway_url, "alice")
    await expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
    await expect(page.get_by_text("Push sent")).to_be_visible()  # autopush
    await answer_on_phone(phone, simulator, "Approve")
    await expect(page.locator("#demo-app-welcome")).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, gateway_url, "alice")
    await expect(page.get_by_text("Push sent")).to_be_visible()
    await answer_on_phone(phone, simulator, "Deny")
    await expect(page.get_by_text("Login request denied.")).to_be_visible()
    await expect(page.get_by_role("button", name="Send another push")).to_be_enabled()
    assert simulator.pending("alice") == []  # no push was re-sent by itself
    assert "/app" not in page.url
