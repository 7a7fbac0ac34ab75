"""The seed's backup-method step clicked through in Chromium: Duo Push first, then the
required backup method (an authenticator app) right after, signed in; later, with the phone
gone, "Use another method" and the app's code; then My 2FA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, expect

from tests.conftest import RunningSimulator
from tests.e2e.test_duo_push_e2e import answer_on_phone, sign_in
from tests.support.authenticator_totp import code_at
from tests.support.databases import sqlite_database
from tests.support.gateway import running_gateway
from tests.support.two_factor import allow_methods
from twofa.services.settings.two_factor import BackupPolicy


@pytest.fixture
async def gateway_url(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[str]:
    async with (
        sqlite_database(tmp_path) as database_url,
        running_gateway(database_url, simulator, mode="demo") as (base_url, settings),
    ):
        await allow_methods(
            settings,
            ("duo_push", "totp"),
            "duo_push",
            backup=BackupPolicy.REQUIRED,
            backup_methods=("totp",),
        )
        yield base_url


async def test_duo_push_then_the_required_backup_then_recovery_without_the_phone(
    context: BrowserContext, gateway_url: str, simulator: RunningSimulator, screenshots: Path
) -> None:
    simulator.add_user("alice")  # her phone is already in Duo: set-up goes straight to a push
    page, phone = await context.new_page(), await context.new_page()

    await sign_in(page, gateway_url, "alice")
    await page.get_by_role("link", name="Next").click()
    await page.get_by_role("button", name="Send Me Push Notification").click()
    await answer_on_phone(phone, simulator, "Approve")

    await expect(page.get_by_role("heading", name="Set up a backup method")).to_be_visible()
    await expect(page.get_by_text("Your administrator requires one.")).to_be_visible()
    await expect(page.get_by_text("Skip for now")).to_have_count(0)
    await page.screenshot(path=str(screenshots / "backup-method-step.png"))
    await page.get_by_role("link", name="Set up authenticator app").click()
    await expect(page.get_by_role("heading", name="Set up an authenticator app")).to_be_visible()
    secret = (await page.locator("#totp-secret").inner_text()).replace(" ", "")
    await page.screenshot(path=str(screenshots / "totp-setup.png"))
    await page.get_by_label("Code from the app").fill(code_at(secret))
    await page.get_by_role("button", name="Finish set-up").click()
    await expect(page.locator("#demo-app-welcome")).to_contain_text("Alice Liddell")

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, gateway_url, "alice")
    await expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
    await page.get_by_role("link", name="Use another method").click()
    await page.get_by_role("link", name="Authenticator app").click()
    await page.get_by_label("Authenticator code").fill(code_at(secret, +1))
    await page.get_by_role("button", name="Verify").click()
    await expect(page.locator("#demo-app-welcome")).to_contain_text("Alice Liddell")

    await page.goto(f"{gateway_url}/my-2fa")
    await expect(page.locator('tr[data-method="duo_push"]')).to_be_visible()
    await expect(page.locator('tr[data-method="totp"]')).to_be_visible()
    await page.screenshot(path=str(screenshots / "my-2fa.png"), full_page=True)
