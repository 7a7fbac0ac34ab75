"""Codes by e-mail clicked through in Chromium, with the admin letting users choose the
address: a user whose account has no address types one of their own, reads the code in the
mailbox (a real SMTP server, aiosmtpd), finishes set-up, and signs in with a new code later."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.conftest import RunningSimulator
from tests.support.email_otp_flow import (
    FRANK,
    FRANK_PASSWORD,
    FRANKS_OWN,
    Site,
    chosen_address_site,
)
from tests.support.smtp import SmtpServer, code_in
from twofa.methods.email_otp import NOT_AN_ADDRESS


@pytest.fixture
async def site(
    tmp_path: Path, simulator: RunningSimulator, mail: SmtpServer
) -> AsyncIterator[Site]:
    async with chosen_address_site(tmp_path, simulator, mail) as site:
        yield site


async def sign_in(page: Page, site: Site) -> None:
    await page.goto(f"{site.base_url}/login")
    await page.get_by_label("Username").fill(FRANK)
    await page.get_by_label("Password").fill(FRANK_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_user_sets_up_codes_at_an_address_of_their_own_then_signs_in_with_one(
    context: BrowserContext, site: Site
) -> None:
    page = await context.new_page()
    await sign_in(page, site)
    await page.locator('a[href="/2fa/m/email_otp/enrol"]').click()

    address = page.get_by_label("E-mail address")
    await expect(address).to_be_focused()
    await address.fill("frank@")  # the browser's own check stops this one before it is sent
    await page.get_by_role("button", name="Send code").click()
    await expect(page.get_by_role("heading", name="Set up codes by e-mail")).to_be_visible()
    assert site.mail.received == []

    await address.fill("frank@localhost")  # the browser lets this one through; the server does not
    await page.get_by_role("button", name="Send code").click()
    await expect(page.locator("#address-error")).to_have_text(NOT_AN_ADDRESS)
    await expect(page.get_by_label("E-mail address")).to_have_value("frank@localhost")
    assert site.mail.received == []

    await page.get_by_label("E-mail address").fill(FRANKS_OWN)
    await page.get_by_role("button", name="Send code").click()
    await expect(page.locator("#email-sent")).to_contain_text(
        f"We sent a 6-digit code to {FRANKS_OWN}"
    )
    [mail] = site.mail.to(FRANKS_OWN)
    await page.get_by_label("Code from the e-mail").fill(code_in(mail.body))
    await page.get_by_role("button", name="Finish set-up").click()
    await expect(page.get_by_role("heading", name="You are signed in")).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    site.wait_out_cooldown()
    await sign_in(page, site)
    await expect(page.locator("#email-sent")).to_contain_text("We sent a 6-digit code to")
    later = site.mail.to(FRANKS_OWN)
    assert len(later) == 2
    await page.get_by_label("Code from the e-mail").fill(code_in(later[-1].body))
    await page.get_by_role("button", name="Verify").click()
    await expect(page.get_by_role("heading", name="You are signed in")).to_be_visible()
