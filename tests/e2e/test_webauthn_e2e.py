"""Security keys clicked through in Chromium with its own virtual authenticator (DevTools'
WebAuthn domain): set one up at the first sign-in, sign out, sign in again by touching it.

Browsers allow WebAuthn only in a secure context, and on plain HTTP only on a loopback host;
they also refuse an IP address as the relying party id. So this gateway's public address is
http://localhost:PORT (relying party "localhost"), not http://127.0.0.1:PORT, where
navigator.credentials fails with a SecurityError."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, CDPSession, Page, expect

from tests.conftest import RunningSimulator
from tests.e2e.test_duo_push_e2e import sign_in
from tests.support.databases import sqlite_database
from tests.support.gateway import gateway_settings, seed_users
from tests.support.servers import free_port, serve_in_thread
from tests.support.two_factor import allow_methods
from twofa.web.app import create_app


@pytest.fixture
async def gateway_url(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[str]:
    port = free_port()
    async with sqlite_database(tmp_path) as database_url:
        settings = gateway_settings(database_url, simulator, port, mode="demo").model_copy(
            update={"public_url": f"http://localhost:{port}"}
        )
        await seed_users(settings)
        await allow_methods(settings, ("webauthn", "totp"), "webauthn")
        with serve_in_thread(create_app(settings), port=port):
            yield settings.public_url


async def plug_in_security_key(context: BrowserContext, page: Page) -> tuple[CDPSession, str]:
    """A USB security key (CTAP2, no PIN, no resident keys) that is touched whenever asked."""
    devtools = await context.new_cdp_session(page)
    await devtools.send("WebAuthn.enable")
    added = await devtools.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": False,
                "hasUserVerification": False,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return devtools, str(added["authenticatorId"])


async def credentials_on(devtools: CDPSession, authenticator: str) -> list[dict[str, Any]]:
    answer = await devtools.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})
    found: list[dict[str, Any]] = answer["credentials"]
    return found


async def test_set_up_a_security_key_then_sign_in_by_touching_it(
    context: BrowserContext, gateway_url: str, screenshots: Path
) -> None:
    page = await context.new_page()
    devtools, key = await plug_in_security_key(context, page)

    await sign_in(page, gateway_url, "alice")
    await expect(
        page.get_by_role("heading", name="Set up two-factor authentication")
    ).to_be_visible()
    await page.get_by_role("link", name="Next").click()
    await expect(
        page.get_by_role("heading", name="Set up a security key or passkey")
    ).to_be_visible()
    await page.get_by_label("Name of the key").fill("Blue YubiKey")
    await page.screenshot(path=str(screenshots / "webauthn-setup.png"))
    await page.get_by_role("button", name="Register security key").click()
    await expect(page.locator("#demo-app-welcome")).to_contain_text("Alice Liddell")
    [made] = await credentials_on(devtools, key)
    assert made["rpId"] == "localhost"
    assert not made["isResidentCredential"]

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_text("You have been signed out.")).to_be_visible()
    await sign_in(page, gateway_url, "alice")
    await expect(page.get_by_role("heading", name="Verify it's you")).to_be_visible()
    await expect(page.get_by_text("Insert your security key and touch it")).to_be_visible()
    await page.screenshot(path=str(screenshots / "webauthn-verify.png"))
    await page.get_by_role("button", name="Use security key").click()
    await expect(page.locator("#demo-app-welcome")).to_contain_text("Alice Liddell")
    [used] = await credentials_on(devtools, key)
    assert used["signCount"] > made["signCount"]

    await page.goto(f"{gateway_url}/my-2fa")
    await expect(page.locator('tr[data-method="webauthn"]')).to_contain_text("Blue YubiKey")


async def test_a_key_the_gateway_does_not_know_gets_a_clear_message(
    context: BrowserContext, gateway_url: str
) -> None:
    page = await context.new_page()
    devtools, key = await plug_in_security_key(context, page)
    await sign_in(page, gateway_url, "alice")
    await page.get_by_role("link", name="Next").click()
    await page.get_by_role("button", name="Register security key").click()
    await expect(page.locator("#demo-app-welcome")).to_be_visible()
    await devtools.send("WebAuthn.clearCredentials", {"authenticatorId": key})  # key reset

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, gateway_url, "alice")
    await page.get_by_role("button", name="Use security key").click()
    status = page.locator("#webauthn-status")
    await expect(status).to_contain_text("The browser refused")
    await expect(page.get_by_role("button", name="Try again")).to_be_enabled()
    await expect(page.get_by_role("link", name="Use another method")).to_be_visible()


async def test_registering_the_same_key_again_is_refused_by_the_browser_with_a_clear_message(
    context: BrowserContext, gateway_url: str
) -> None:
    page = await context.new_page()
    devtools, key = await plug_in_security_key(context, page)
    await sign_in(page, gateway_url, "alice")
    await page.get_by_role("link", name="Next").click()
    await page.get_by_role("button", name="Register security key").click()
    await expect(page.locator("#demo-app-welcome")).to_be_visible()

    await page.goto(f"{gateway_url}/2fa/m/webauthn/enrol")  # add a key, with the same one
    await page.get_by_role("button", name="Register security key").click()
    status = page.locator("#webauthn-status")
    await expect(status).to_contain_text("This security key or passkey is already registered.")
    assert len(await credentials_on(devtools, key)) == 1
    await page.goto(f"{gateway_url}/my-2fa")
    await expect(page.locator('tr[data-method="webauthn"]')).to_have_count(1)
