"""Duo's other factors clicked through in Chromium: at set-up the person has Duo text passcodes
and types one; next time, while the autopush waits, they ask for a phone call instead and
press "1" on the simulated phone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.conftest import RunningSimulator
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, running_gateway

EVERY_FACTOR = ["push", "phone", "sms", "passcode"]


@pytest.fixture
async def gateway_url(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[str]:
    async with (
        sqlite_database(tmp_path) as database_url,
        running_gateway(database_url, simulator, mode="demo", allowed_factors=EVERY_FACTOR) as (
            base_url,
            _settings,
        ),
    ):
        yield base_url


async def sign_in(page: Page, gateway_url: str) -> None:
    await page.goto(f"{gateway_url}/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Sign in").click()


async def test_sms_passcodes_at_set_up_then_a_call_instead_of_the_push(
    context: BrowserContext, gateway_url: str, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice", devices=[{"type": "phone", "name": "iPhone"}])
    page, phone = await context.new_page(), await context.new_page()

    await sign_in(page, gateway_url)
    await page.get_by_role("link", name="Next").click()
    await expect(page.get_by_text("Your phone is already set up with Duo")).to_be_visible()
    await page.get_by_role("button", name="Text Me Passcodes").click()
    await expect(page.get_by_text("We sent passcodes to your phone by SMS")).to_be_visible()
    await phone.goto(f"{simulator.base_url}/_sim/phone")
    await phone.get_by_label("User").select_option("alice")
    await expect(phone.locator(".sms").first).to_contain_text("passcodes")
    inbox = simulator.control.get("/_sim/users/alice/sms").json()
    await page.get_by_label("Passcode").fill(inbox["messages"][-1]["passcodes"][0])
    await page.get_by_role("button", name="Verify passcode").click()
    await expect(page.locator("#demo-app-welcome")).to_contain_text("Alice Liddell")

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, gateway_url)
    await expect(page.get_by_text("Push sent")).to_be_visible()  # autopush
    await page.get_by_role("button", name="Call Me").click()
    await expect(page.get_by_text("Calling your phone")).to_be_visible()
    call = phone.locator(".push.call")
    await expect(call.get_by_text("Incoming call… press 1 to approve")).to_be_visible()
    await call.get_by_role("button", name="Approve").click()
    await expect(page.locator("#demo-app-welcome")).to_contain_text("Alice Liddell")
    [unanswered] = simulator.pending("alice")
    assert unanswered["factor"] == "push"  # the push was left alone, not approved for them
