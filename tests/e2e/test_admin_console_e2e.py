"""The seed's admin steps clicked through in Chromium: sign in as admin (with Duo Push, as
every admin), paste the Duo keys in Advanced Settings and save, choose Duo Push in Two Factor
Settings (a required backup policy without a backup method is refused, and the page says so),
save, switch 2FA on for group engineering in User Management; then a member's sign-in starts
the Duo set-up. The screenshots the README shows are taken here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.conftest import RunningSimulator
from tests.e2e.test_duo_push_e2e import answer_on_phone
from tests.support.console import ADMIN_PASSWORDS, add_admins
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, running_gateway
from twofa.config import Settings
from twofa.services.runtime import Gateway


@pytest.fixture
async def gateway_url(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[str]:
    async with (
        sqlite_database(tmp_path) as database_url,
        running_gateway(database_url, simulator, mode="demo") as (base_url, settings),
    ):
        await add_admins(settings)
        await switch_off_engineering(settings)  # the admin switches it on in the console
        yield base_url


async def switch_off_engineering(settings: Settings) -> None:
    gateway = await Gateway.start(settings)
    try:
        await gateway.accounts.set_group_policy("engineering", False)
    finally:
        await gateway.close()


async def sign_in(page: Page, gateway_url: str, username: str, password: str) -> None:
    await page.goto(f"{gateway_url}/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def screenshot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / name), full_page=True)


async def test_admin_sets_up_duo_push_in_the_console(
    context: BrowserContext, gateway_url: str, simulator: RunningSimulator, screenshots: Path
) -> None:
    simulator.add_user("admin")  # the admin's phone is in Duo: an admin passes a second factor
    page, phone = await context.new_page(), await context.new_page()
    await sign_in(page, gateway_url, "admin", ADMIN_PASSWORDS["admin"])
    await page.get_by_role("link", name="Next").click()
    await page.get_by_role("button", name="Send Me Push Notification").click()
    await answer_on_phone(phone, simulator, "Approve", username="admin")
    await expect(page).to_have_url(f"{gateway_url}/app")

    await page.goto(f"{gateway_url}/admin/settings/advanced")
    await expect(page.get_by_role("heading", name="Duo Push Notification Settings")).to_be_visible()
    await expect(page.get_by_text("Secret key: set in the settings file")).to_be_visible()
    await page.get_by_label("Integration key").fill(simulator.ikey)
    await page.get_by_label("Secret key").fill(simulator.skey)
    await page.get_by_label("API hostname").fill(simulator.base_url)
    await page.get_by_label("Application name shown in the push").fill("Jira")
    await page.get_by_role("button", name="Save").click()

    await expect(page.get_by_text("Saved. Duo answered: keys are valid.")).to_be_visible()
    await expect(page.get_by_text("Secret key: set.")).to_be_visible()
    await expect(page.get_by_label("Secret key")).to_have_value("")
    await screenshot(page, screenshots, "advanced-settings.png")
    await page.get_by_role("button", name="Test connection").click()
    await expect(page.get_by_text("Connected: Duo's clock differs by")).to_be_visible()

    await page.get_by_role("link", name="Two Factor Settings").click()
    methods = page.get_by_role("group", name="2FA methods for users")
    await expect(methods.get_by_label("Duo Push Notification")).to_be_checked()
    await expect(methods.get_by_label("Authenticator app (TOTP)")).to_be_enabled()
    backup = page.get_by_role("group", name="Backup Method")
    await backup.get_by_label("Required at enrolment").check()
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("choose the backup method users set up")).to_be_visible()
    await expect(page.get_by_text("Nothing was saved")).to_be_visible()

    await backup.get_by_label("None", exact=True).check()
    await page.get_by_label("Remember this device (days, 0 = off)").fill("14")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("Saved. The new Two Factor Settings apply")).to_be_visible()
    await expect(page.get_by_label("Remember this device (days, 0 = off)")).to_have_value("14")
    await screenshot(page, screenshots, "two-factor-settings.png")

    await page.get_by_role("link", name="User Management").click()
    await page.get_by_role("link", name="Groups").click()
    engineering = page.locator('tr[data-group="engineering"]')
    await expect(engineering).to_contain_text("off")
    await engineering.get_by_role("button", name="Switch 2FA on").click()
    await expect(page.locator('tr[data-group="engineering"]')).to_contain_text(
        "required for members"
    )
    await screenshot(page, screenshots, "user-management-groups.png")

    await context.clear_cookies()
    await sign_in(page, gateway_url, "alice", PASSWORDS["alice"])
    await page.get_by_role("link", name="Next").click()
    await expect(page.get_by_role("heading", name="Set up Duo Push")).to_be_visible()
    assert (screenshots / "advanced-settings.png").stat().st_size > 0


async def test_a_user_who_is_not_an_admin_is_turned_away(
    context: BrowserContext, gateway_url: str
) -> None:
    page = await context.new_page()
    await sign_in(page, gateway_url, "bob", PASSWORDS["bob"])
    await expect(page).to_have_url(f"{gateway_url}/app")

    answer = await page.goto(f"{gateway_url}/admin/settings/two-factor")

    assert answer is not None
    assert answer.status == 403
    await expect(page.get_by_text("This page is for administrators only.")).to_be_visible()
