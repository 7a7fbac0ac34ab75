"""twofa as the OpenID Connect provider of a real, widely deployed relying party: Apache httpd
with mod_auth_openidc (Debian's), two virtual hosts, two clients. The module does discovery,
JWKS, the code exchange (PKCE, client_secret_basic) and the ID token's validation itself; the
browser is headless Chromium. Alice signs in to app1 with her password and Duo Push, is
signed in to app2 without being asked again, and app1's logout ends twofa's session and,
through back-channel logout (twofa POSTs a logout token to each module's loopback HTTP
virtual host, tests.support.apache), app2's own session too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from sqlalchemy import select

from tests.conftest import RunningSimulator
from tests.e2e.conftest import SHUTDOWN_STEP_S
from tests.e2e.test_duo_push_e2e import answer_on_phone
from tests.support.apache import (
    CLAIMS_PATH,
    RelyingParty,
    RunningApache,
    backchannel_logout_uri,
    logout_url,
    redirect_uri,
    running_apache,
    signed_out_uri,
)
from tests.support.browser_processes import within
from tests.support.databases import sqlite_database
from tests.support.gateway import PASSWORDS, gateway_settings, seed_users
from tests.support.servers import free_port, serve_in_thread
from twofa.config import Settings
from twofa.services.idp.applications import NewApplication
from twofa.services.runtime import Gateway
from twofa.storage.tables import AuditRow
from twofa.web.app import create_app

AUTH, APP1, APP2 = "auth.example.test", "app1.example.test", "app2.example.test"


@dataclass(frozen=True)
class Deployment:
    apache: RunningApache
    auth_url: str
    settings: Settings

    def claims_url(self, host: str) -> str:
        return self.apache.url(host, CLAIMS_PATH)


async def register_relying_parties(settings: Settings, port: int) -> list[RelyingParty]:
    """One confidential client per virtual host, its redirect and post-logout URIs exactly
    the module's, and its back-channel logout URI on its own loopback HTTP port."""
    gateway = await Gateway.start(settings)
    try:
        parties = []
        for name, host in (("App one", APP1), ("App two", APP2)):
            backchannel_port = free_port()
            issued = await gateway.applications.add(
                NewApplication(
                    name,
                    [redirect_uri(host, port)],
                    post_logout_redirect_uris=[signed_out_uri(host, port)],
                    backchannel_logout_uri=backchannel_logout_uri(backchannel_port),
                ),
                actor="test",
            )
            assert issued.client_secret is not None
            client_id, secret = issued.application.client_id, issued.client_secret
            parties.append(RelyingParty(host, client_id, secret, backchannel_port))
        return parties
    finally:
        await gateway.close()


@pytest.fixture
async def deployment(tmp_path: Path, simulator: RunningSimulator) -> AsyncIterator[Deployment]:
    twofa_port, apache_port = free_port(), free_port()
    auth_url = f"http://{AUTH}:{twofa_port}"
    async with sqlite_database(tmp_path) as url:
        settings = gateway_settings(url, simulator, twofa_port, "demo", public_url=auth_url)
        await seed_users(settings)  # alice, in group engineering, which has 2FA switched on
        parties = await register_relying_parties(settings, apache_port)
        with (
            serve_in_thread(create_app(settings), port=twofa_port),
            running_apache(apache_port, auth_url, parties) as apache,
        ):
            yield Deployment(apache, auth_url, settings)


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """The shared context's, trusting the apps' throwaway self-signed certificate."""
    context = await browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        await within(context.close(), "closing the browser context", SHUTDOWN_STEP_S)


async def claims_shown(page: Page, deployment: Deployment, host: str) -> dict[str, str]:
    """The page's `name=value` lines, once the browser is back on `host`'s claims page."""
    url = deployment.claims_url(host)
    try:
        await page.wait_for_url(url)
    except PlaywrightTimeoutError:
        raise AssertionError(
            f"expected {url}, the browser is on {page.url}:\n{await page.content()}\n"
            f"Apache's error log:\n{deployment.apache.log_tail()}"
        ) from None
    lines = (await page.locator("body").inner_text()).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


async def told_by_back_channel(deployment: Deployment, applications: int) -> None:
    """Waits until twofa has told `applications` relying parties that the session ended
    (its audit log says so; it tells them in the background, after the sign-out)."""
    gateway = await Gateway.start(deployment.settings)
    try:
        for _ in range(200):
            async with gateway.db() as db:
                rows = (
                    await db.scalars(
                        select(AuditRow).where(AuditRow.kind == "oidc_backchannel_logout")
                    )
                ).all()
            failed = [row.detail for row in rows if row.outcome != "sent"]
            assert not failed, f"{failed}\nApache's error log:\n{deployment.apache.log_tail()}"
            if len(rows) >= applications:
                return
            await asyncio.sleep(0.1)
    finally:
        await gateway.close()
    raise AssertionError(f"twofa did not tell {applications} applications:\n{rows}")


async def on_twofa_sign_in(page: Page, deployment: Deployment) -> None:
    try:
        await page.wait_for_url(f"{deployment.auth_url}/login?**")
    except PlaywrightTimeoutError:
        raise AssertionError(f"not on twofa's sign-in page but on {page.url}") from None
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()


async def sign_in_with_duo_push(page: Page, phone: Page, simulator: RunningSimulator) -> None:
    """Alice's password on twofa's page, then Duo Push (her phone already in Duo: the
    set-up page only sends the first push), approved on the simulator's phone page."""
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORDS["alice"])
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("link", name="Next").click()
    await page.get_by_role("button", name="Send Me Push Notification").click()
    await answer_on_phone(phone, simulator, "Approve", username="alice")


async def test_apache_relying_parties_share_one_sign_in_with_duo_push_and_logout_ends_it(
    context: BrowserContext, deployment: Deployment, simulator: RunningSimulator
) -> None:
    simulator.add_user("alice")  # her phone is already in Duo
    page, phone = await context.new_page(), await context.new_page()
    asked_for_password: list[str] = []
    page.on(
        "request",
        lambda r: asked_for_password.append(r.url) if "/login" in r.url else None,
    )

    await page.goto(deployment.claims_url(APP1))
    await on_twofa_sign_in(page, deployment)
    await sign_in_with_duo_push(page, phone, simulator)
    app1 = await claims_shown(page, deployment, APP1)
    assert app1["remote_user"] == "alice"
    assert app1["preferred_username"] == "alice"
    assert app1["groups"] == "engineering"
    assert app1["name"] == "Alice Liddell"
    assert app1["amr"] == "pwd,mfa,swk"  # password, then Duo Push

    asked_for_password.clear()
    await page.goto(deployment.claims_url(APP2))
    app2 = await claims_shown(page, deployment, APP2)
    assert (app2["preferred_username"], app2["groups"]) == ("alice", "engineering")
    assert app2["sub"] == app1["sub"]
    assert app2["aud"] != app1["aud"]  # two clients, one sign-in
    assert app2["sid"] == app1["sid"]  # one twofa session, named alike to both
    assert asked_for_password == []  # single sign-on: no sign-in page on the way
    assert simulator.pending("alice") == []  # and no second push

    await page.goto(logout_url(APP1, deployment.apache.port))
    await page.wait_for_url(signed_out_uri(APP1, deployment.apache.port))
    await expect(page.locator("body")).to_contain_text(f"signed out of {APP1}")

    await page.goto(deployment.claims_url(APP1))  # app1's session and twofa's are gone
    await on_twofa_sign_in(page, deployment)

    # twofa told both modules, over the back channel, that the session ended: app2's own
    # Apache session is gone too (its cookie still in the browser), so app2 asks twofa
    # again, which has no session left to offer.
    await told_by_back_channel(deployment, applications=2)
    await page.goto(deployment.claims_url(APP2))
    try:
        await on_twofa_sign_in(page, deployment)
    except AssertionError as still_in:
        raise AssertionError(f"{still_in}\n{deployment.apache.log_tail(60)}") from None
